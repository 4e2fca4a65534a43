"""The AstroM3 contrastive loss and its metrics, over the GLOBAL batch.

Each function is a per-device program (`axis_name` set, inside `jax.shard_map`)
that is also the plain single-device computation (`axis_name=None`). The
derivation, padding (`mask`) and missing modalities (`presence`): docs/design.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax

Pair = tuple[str, str]
Presence = Mapping[str, jax.Array]

_NEG = -1e9  # logit given to padded columns: exp() underflows to exactly 0


def _gather(x, axis_name):
    """All rows of the mesh; tiled, so the column order is the global row order."""
    if axis_name is None:
        return x
    return lax.all_gather(x, axis_name, tiled=True)


def _psum(x, axis_name):
    return x if axis_name is None else lax.psum(x, axis_name)


def _labels(n_local, axis_name):
    """Global column index of each local row."""
    offset = 0 if axis_name is None else lax.axis_index(axis_name) * n_local
    return offset + jnp.arange(n_local)


def _row_mask(mask, n_local):
    if mask is None:
        return jnp.ones((n_local,), jnp.float32)
    return mask.astype(jnp.float32)


def _directed_logits(q, k, scale, col_mask, axis_name):
    """Scaled cosine logits of local queries `q` against all gathered keys."""
    keys = _gather(k.astype(jnp.float32), axis_name)
    logits = scale * (q.astype(jnp.float32) @ keys.T)
    return jnp.where(col_mask[None, :] > 0, logits, _NEG)


def _pair_logits(emb, a, b, scale, row_mask, axis_name):
    """(logits a->b, logits b->a) for the local rows, both (n_local, N)."""
    col_mask = _gather(row_mask, axis_name)
    scale = jnp.asarray(scale, jnp.float32)
    ab = _directed_logits(emb[a], emb[b], scale, col_mask, axis_name)
    ba = _directed_logits(emb[b], emb[a], scale, col_mask, axis_name)
    return ab, ba


def masked_mean(values, row_mask, axis_name):
    """Mean of `values` over the rows with `row_mask` 1, over the whole mesh."""
    num = _psum(jnp.sum(values * row_mask), axis_name)
    den = _psum(jnp.sum(row_mask), axis_name)
    return num / jnp.maximum(den, 1.0)


def cross_entropy(logits, labels):
    """Per-row cross-entropy of integer `labels` under `logits` (float32)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _prepare(embeddings, scales, mask, presence):
    """(embeddings, {pair: local row mask}, masked?) for the loss and metrics.

    Without presence flags every pair shares the `mask` rows and the
    embeddings are untouched (the original computation). With them, each
    modality's absent rows are zeroed and each pair gets its own rows.
    """
    n_local = next(iter(embeddings.values())).shape[0]
    row_mask = _row_mask(mask, n_local)
    if not presence:
        return embeddings, dict.fromkeys(scales, row_mask), False
    valid = {
        m: row_mask * presence[m].astype(jnp.float32) if m in presence else row_mask
        for m in embeddings
    }
    emb = {
        m: jnp.where(valid[m][:, None] > 0, x, jnp.zeros_like(x))
        for m, x in embeddings.items()
    }
    rows = {}
    for a, b in scales:
        rows[(a, b)] = row_mask
        for m in (a, b):
            if m in presence:
                rows[(a, b)] = rows[(a, b)] * presence[m].astype(jnp.float32)
    return emb, rows, True


def _combine(pair_loss, rows, masked, axis_name):
    """Sum of the pair losses; with presence flags, P / P_present times the
    sum over pairs with present rows (the others' losses are exactly 0)."""
    total = sum(pair_loss.values())
    if not masked:
        return total
    present = [
        (_psum(jnp.sum(rows[p]), axis_name) > 0).astype(jnp.float32) for p in pair_loss
    ]
    return total * (len(pair_loss) / jnp.maximum(sum(present), 1.0))


def _pair_loss(ab, ba, labels, rows, axis_name):
    loss = masked_mean(cross_entropy(ab, labels), rows, axis_name)
    return loss + masked_mean(cross_entropy(ba, labels), rows, axis_name)


def clip_loss_and_pairs(
    embeddings: Mapping[str, jax.Array],
    scales: Mapping[Pair, jax.Array],
    *,
    axis_name: str | None = None,
    mask: jax.Array | None = None,
    presence: Presence | None = None,
) -> tuple[jax.Array, dict[Pair, jax.Array]]:
    """(the pre-training loss, {pair: CE(rows) + CE(columns)}).

    Without `presence` the loss is the sum of the pair losses. With it, each
    pair runs over its present rows, and the loss is P / P_present times the
    sum over the P_present pairs that have present rows (docs/design.md).
    """
    n_local = next(iter(embeddings.values())).shape[0]
    emb, rows, masked = _prepare(embeddings, scales, mask, presence)
    labels = _labels(n_local, axis_name)
    out = {}
    for (a, b), scale in scales.items():
        ab, ba = _pair_logits(emb, a, b, scale, rows[(a, b)], axis_name)
        out[(a, b)] = _pair_loss(ab, ba, labels, rows[(a, b)], axis_name)
    return _combine(out, rows, masked, axis_name), out


def pair_losses(
    embeddings: Mapping[str, jax.Array],
    scales: Mapping[Pair, jax.Array],
    *,
    axis_name: str | None = None,
    mask: jax.Array | None = None,
    presence: Presence | None = None,
) -> dict[Pair, jax.Array]:
    """CE(rows) + CE(columns) for each modality pair (directions summed);
    0 for a pair without present rows."""
    return clip_loss_and_pairs(
        embeddings, scales, axis_name=axis_name, mask=mask, presence=presence
    )[1]


def clip_loss(
    embeddings: Mapping[str, jax.Array],
    scales: Mapping[Pair, jax.Array],
    *,
    axis_name: str | None = None,
    mask: jax.Array | None = None,
    presence: Presence | None = None,
) -> jax.Array:
    """The AstroM3 pre-training loss: the sum of the pair losses (scaled as
    docs/design.md says when modalities are missing)."""
    return clip_loss_and_pairs(
        embeddings, scales, axis_name=axis_name, mask=mask, presence=presence
    )[0]


def _recall(logits, labels, row_mask, k, axis_name):
    """Fraction of real rows whose true column ranks in the top k.

    A rival column counts against the true one unless its logit is known
    to be lower: ties go against the true match, so a collapsed model (all
    embeddings equal) finds nothing, and a NaN rival counts against too. A
    row whose own logit is NaN is never a hit. Padded columns hold `_NEG`,
    far below any real logit, so they never count.
    """
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rival = jnp.arange(logits.shape[-1])[None, :] != labels[:, None]
    ahead = (logits >= true) | jnp.isnan(logits)
    rank = jnp.sum(ahead & rival, axis=-1)
    hit = (rank < k) & ~jnp.isnan(true[:, 0])
    return masked_mean(hit.astype(jnp.float32), row_mask, axis_name)


def clip_metrics(
    embeddings: Mapping[str, jax.Array],
    scales: Mapping[Pair, jax.Array],
    *,
    axis_name: str | None = None,
    mask: jax.Array | None = None,
    presence: Presence | None = None,
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, jax.Array]:
    """Loss, pre-training accuracy and retrieval recall@k, as a flat dict.

    Keys: `loss`, `loss/<a>-<b>`, `accuracy` and `recall@<k>/<q>-><r>` for
    retrieving modality r from a query in q. `accuracy` is the pre-training
    accuracy of the AstroM3 code: for each pair, the row softmax of the
    logits and of their transpose are averaged, the results are summed over
    pairs, and a row is right when its argmax is the true match. With
    `presence`, every metric counts present rows only: pair losses and
    recall@k over the pair's present rows, as queries and as candidates;
    `accuracy` over the rows in at least one present pair, each row's
    averaged softmaxes summed over the pairs it belongs to.
    """
    n_local = next(iter(embeddings.values())).shape[0]
    emb, rows, masked = _prepare(embeddings, scales, mask, presence)
    labels = _labels(n_local, axis_name)
    out, pair_loss, probs = {}, {}, 0.0
    for (a, b), scale in scales.items():
        w = rows[(a, b)]
        ab, ba = _pair_logits(emb, a, b, scale, w, axis_name)
        pair_loss[(a, b)] = out[f"loss/{a}-{b}"] = _pair_loss(
            ab, ba, labels, w, axis_name
        )
        pair_probs = 0.5 * (jax.nn.softmax(ab, axis=-1) + jax.nn.softmax(ba, axis=-1))
        probs += w[:, None] * pair_probs if masked else pair_probs
        for k in ks:
            out[f"recall@{k}/{a}->{b}"] = _recall(ab, labels, w, k, axis_name)
            out[f"recall@{k}/{b}->{a}"] = _recall(ba, labels, w, k, axis_name)
    out["loss"] = _combine(pair_loss, rows, masked, axis_name)
    if masked:  # rows in at least one pair
        acc_rows = jnp.max(jnp.stack(list(rows.values())), axis=0)
    else:
        acc_rows = _row_mask(mask, n_local)
    hit = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
    out["accuracy"] = masked_mean(hit, acc_rows, axis_name)
    return out
