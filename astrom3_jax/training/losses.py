"""The AstroM3 contrastive loss and its metrics, over the GLOBAL batch.

Every function here is written as a per-device program: with `axis_name`
set (inside `jax.shard_map` over a ('data',) mesh) each device keeps its
own rows, all-gathers the other modality's embeddings (tiled, so the
column order is the global row order) and offsets its labels by
`axis_index * n_local`. With `axis_name=None` the same code is the plain
single-device computation, so one implementation serves both.

Results are reduced with `psum` over the mesh before they are returned, so
a loss is device-invariant and its gradient, taken inside `shard_map` or
outside, is already the gradient of the global loss. The tempting
alternative, the gradient of each device's local loss followed by a
`pmean`, is wrong under `shard_map`: replicated parameters already receive
gradients summed over devices, so it comes out device-count times too large
(tests/test_losses.py checks both ways against one device).

`mask` (B,) marks real rows (1) and padding (0) of a padded evaluation
batch; padded rows are left out of every mean and padded columns can never
be chosen as a match, so a padded batch scores exactly like the unpadded
one.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax

Pair = tuple[str, str]

_NEG = -1e9  # logit given to padded columns: exp() underflows to exactly 0


def _gather(x, axis_name):
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


def _masked_mean(values, row_mask, axis_name):
    num = _psum(jnp.sum(values * row_mask), axis_name)
    den = _psum(jnp.sum(row_mask), axis_name)
    return num / jnp.maximum(den, 1.0)


def _cross_entropy(logits, labels):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def pair_losses(
    embeddings: Mapping[str, jax.Array],
    scales: Mapping[Pair, jax.Array],
    *,
    axis_name: str | None = None,
    mask: jax.Array | None = None,
) -> dict[Pair, jax.Array]:
    """CE(rows) + CE(columns) for each modality pair (directions summed)."""
    n_local = next(iter(embeddings.values())).shape[0]
    row_mask = _row_mask(mask, n_local)
    labels = _labels(n_local, axis_name)
    out = {}
    for (a, b), scale in scales.items():
        ab, ba = _pair_logits(embeddings, a, b, scale, row_mask, axis_name)
        out[(a, b)] = _masked_mean(
            _cross_entropy(ab, labels), row_mask, axis_name
        ) + _masked_mean(_cross_entropy(ba, labels), row_mask, axis_name)
    return out


def clip_loss(
    embeddings: Mapping[str, jax.Array],
    scales: Mapping[Pair, jax.Array],
    *,
    axis_name: str | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
    """The AstroM3 pre-training loss: the sum of the pair losses."""
    losses = pair_losses(embeddings, scales, axis_name=axis_name, mask=mask)
    return sum(losses.values())


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
    return _masked_mean(hit.astype(jnp.float32), row_mask, axis_name)


def clip_metrics(
    embeddings: Mapping[str, jax.Array],
    scales: Mapping[Pair, jax.Array],
    *,
    axis_name: str | None = None,
    mask: jax.Array | None = None,
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, jax.Array]:
    """Loss, pre-training accuracy and retrieval recall@k, as a flat dict.

    Keys: `loss`, `loss/<a>-<b>`, `accuracy` and `recall@<k>/<q>-><r>` for
    retrieving modality r from a query in q. `accuracy` is the pre-training
    accuracy of the AstroM3 code: for each pair, the row softmax of the
    logits and of their transpose are averaged, the results are summed over
    pairs, and a row is right when its argmax is the true match.
    """
    n_local = next(iter(embeddings.values())).shape[0]
    row_mask = _row_mask(mask, n_local)
    labels = _labels(n_local, axis_name)
    out, total, probs = {}, 0.0, 0.0
    for (a, b), scale in scales.items():
        ab, ba = _pair_logits(embeddings, a, b, scale, row_mask, axis_name)
        loss = _masked_mean(_cross_entropy(ab, labels), row_mask, axis_name)
        loss += _masked_mean(_cross_entropy(ba, labels), row_mask, axis_name)
        out[f"loss/{a}-{b}"] = loss
        total += loss
        probs += 0.5 * (jax.nn.softmax(ab, axis=-1) + jax.nn.softmax(ba, axis=-1))
        for k in ks:
            out[f"recall@{k}/{a}->{b}"] = _recall(ab, labels, row_mask, k, axis_name)
            out[f"recall@{k}/{b}->{a}"] = _recall(ba, labels, row_mask, k, axis_name)
    out["loss"] = total
    hit = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
    out["accuracy"] = _masked_mean(hit, row_mask, axis_name)
    return out
