"""Self-attention for the photometry encoder: Informer ProbSparse, or full.

ProbSparse is Zhou et al. 2021's, as the AstroM3 reference runs it;
`SelfAttention` computes it without forming the full K and V. The algorithm
and how the projections are folded in: docs/design.md.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from astrom3_jax.models import layers


def probsparse_top_counts(length: int, factor: int) -> tuple[int, int]:
    """(active queries u, sampled keys per query), both c * ceil(ln L) capped at L."""
    n = factor * int(math.ceil(math.log(length)))
    return min(n, length), min(n, length)


def sample_counts(key: jax.Array, length: int, n_sample: int) -> jax.Array:
    """(L, L) float: how often key k was sampled for query q (with replacement)."""
    idx = jax.random.randint(key, (length, n_sample), 0, length)
    return jax.nn.one_hot(idx, length, dtype=jnp.float32).sum(axis=1)


def _sparsity(q, k, sample_key, n_sample):
    """M(q) per (B, H, L) from the sampled keys; no gradient (it only selects).

    Scores only the n_sample sampled keys of each query (one gather + dot per
    sample): the (B, H, L, L) score tensor plus its masked max and weighted
    sum cost ~70 ms per layer on XLA CPU at batch 64 (reductions over a
    200-wide minor axis vectorise badly), this ~20 ms. Same keys as
    `sample_counts` (duplicates counted with their multiplicity); only the
    summation order differs.
    """
    length = q.shape[1]
    q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
    idx = jax.random.randint(sample_key, (length, n_sample), 0, length)
    sampled_max = total = None
    for j in range(n_sample):
        s = jnp.sum(q * k[:, idx[:, j]], axis=-1, dtype=jnp.float32)  # (B, L, H)
        sampled_max = s if j == 0 else jnp.maximum(sampled_max, s)
        total = s if j == 0 else total + s
    return jnp.swapaxes(sampled_max - total / length, 1, 2)


def _sparsity_from_scores(q, k, sample_key, n_sample):
    """`_sparsity` for accelerators: every score q.k at once (B, H, L, L),
    then the max and the count-weighted sum over each query's sampled keys.

    The per-sample gathers each copy all of K; on a TPU that memory traffic
    costs far more than the (L, L) scores, which one matmul makes.
    """
    length = q.shape[1]
    q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
    counts = sample_counts(sample_key, length, n_sample)  # (L, L)
    scores = jnp.einsum("blhd,bkhd->bhlk", q, k, preferred_element_type=jnp.float32)
    sampled_max = jnp.max(jnp.where(counts > 0, scores, -jnp.inf), axis=-1)
    total = jnp.einsum("bhlk,lk->bhl", scores, counts)
    return sampled_max - total / length


def probsparse_attention(q, k, v, sample_key, factor: int):
    """ProbSparse attention; q, k, v (B, L, H, Dh) -> (B, H, L, Dh).

    Only the u active queries are attended: they are picked with a one-hot
    (B, H, u, L) matrix and written back with its transpose (top_k indices
    are distinct), so everything is a matmul.
    """
    _, length, _, head_dim = q.shape
    n_top, n_sample = probsparse_top_counts(length, factor)
    scale = 1.0 / math.sqrt(head_dim)
    if n_top >= length:  # every query active: plain softmax attention
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
        attn = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bhqk,bkhd->bhqd", attn, v)
    _, top = jax.lax.top_k(_sparsity(q, k, sample_key, n_sample), n_top)
    pick = jax.nn.one_hot(top, length, dtype=q.dtype)  # (B, H, u, L)
    q_top = jnp.einsum("bhul,blhd->bhud", pick, q)
    scores = jnp.einsum("bhud,bkhd->bhuk", q_top, k).astype(jnp.float32) * scale
    attn = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    ctx_top = jnp.einsum("bhuk,bkhd->bhud", attn, v)
    mean_v = jnp.mean(v, axis=1)[:, :, None, :]  # (B, H, 1, Dh)
    return mean_v + jnp.einsum("bhul,bhud->bhld", pick, ctx_top - mean_v)


def merge_positions(length: int, n_heads: int, reference_reshape: bool):
    """Where head h, position p lands when heads are merged: (row, slot) (H, L).

    Merged rows hold n_heads slots of head_dim values. Standard merge: row p,
    slot h. Reference reshape of (H, L, Dh) straight to (L, H * Dh): chunk
    t = h * L + p goes to row t // H, slot t % H.
    """
    h, p = np.meshgrid(np.arange(n_heads), np.arange(length), indexing="ij")
    if reference_reshape:
        t = h * length + p
        return t // n_heads, t % n_heads
    return p, h


def _project_mean_rows(per_slot, rows, slots, length: int):
    """Output rows when every position holds mean(V): (B, L, D).

    per_slot[b, h, j] is mean_v[b, h] projected by slot j's block of the
    output kernel; merged row r sums, over its slots j, the head found there.
    """
    heads = per_slot.shape[1]
    head_at = np.zeros((length, heads), np.int64)  # (row, slot) -> head
    head_at[rows, slots] = np.arange(heads)[:, None]
    if (head_at == head_at[:1]).all():  # standard merge: every row alike
        row = sum(per_slot[:, head_at[0, j], j] for j in range(heads))
        return jnp.broadcast_to(row[:, None], (row.shape[0], length, row.shape[-1]))
    if (head_at == head_at[:, :1]).all() and (np.diff(head_at[:, 0]) >= 0).all():
        # reference reshape with L % H == 0: rows of head h are contiguous
        counts = np.bincount(head_at[:, 0], minlength=heads)
        per_head = per_slot.sum(axis=2)
        return jnp.repeat(per_head, counts, axis=1, total_repeat_length=length)
    one_hot = np.zeros((length, heads, heads), np.float32)  # (row, slot, head)
    one_hot[rows, slots, np.arange(heads)[:, None]] = 1.0
    return jnp.einsum("rjh,bhjd->brd", jnp.asarray(one_hot, per_slot.dtype), per_slot)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with query/key/value/out projections.

    `kind='probsparse'` (factor c): Informer's ProbSparse attention, with the
    projections folded into the attention of the u active queries
    (`_probsparse`, docs/design.md). `kind='full'`: standard multi-head
    attention through `jax.nn.dot_product_attention` with the padding mask
    as a key mask (fused kernels on GPU), heads merged normally.
    `reference_reshape` reproduces the reference's merge of heads: the
    (B, H, L, Dh) output is reshaped row-major straight to (B, L, H * Dh),
    which interleaves heads and positions; published weights need it.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        kind: str = "probsparse",
        factor: int = 1,
        reference_reshape: bool = True,
        implementation: str | None = None,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if kind not in ("probsparse", "full"):
            raise ValueError(f"attention must be 'probsparse' or 'full', got {kind!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.kind = kind
        self.factor = factor
        self.reference_reshape = reference_reshape
        self.implementation = implementation  # for 'full': None (auto), 'xla', 'cudnn'
        # probsparse: False projects Q, K, V in full (the plain transcription)
        self.projected = True
        self.query = layers.linear(d_model, d_model, rngs=rngs, dtype=dtype)
        self.key = layers.linear(d_model, d_model, rngs=rngs, dtype=dtype)
        self.value = layers.linear(d_model, d_model, rngs=rngs, dtype=dtype)
        self.out = layers.linear(d_model, d_model, rngs=rngs, dtype=dtype)
        self.sample_rngs = rngs["sample"].fork() if kind == "probsparse" else None

    def _sample_key(self, rngs):
        if rngs is not None:
            return rngs["sample"]()
        if self.sample_rngs is None:
            raise ValueError("ProbSparse attention needs an rng stream 'sample'")
        return self.sample_rngs()

    def _weights(self, linear, dtype):
        """(kernel (D_in, D_out), bias) of an nnx.Linear in the compute dtype."""
        return linear.kernel[...].astype(dtype), linear.bias[...].astype(dtype)

    def _probsparse(self, x, sample_key):
        """ProbSparse attention + output projection from x (B, L, D) directly."""
        batch, length, d_model = x.shape
        heads = self.n_heads
        head_dim = d_model // heads
        n_top, n_sample = probsparse_top_counts(length, self.factor)
        dtype = x.dtype
        wq, bq = self._weights(self.query, dtype)
        wk, bk = self._weights(self.key, dtype)
        wv, bv = self._weights(self.value, dtype)
        wo, bo = self._weights(self.out, dtype)
        by_head = (d_model, heads, head_dim)

        # Selection: Q and K of every row, without gradient (top_k only).
        x_ng, wq_ng, bq_ng, wk_ng, bk_ng = jax.lax.stop_gradient((x, wq, bq, wk, bk))
        split = (batch, length, heads, head_dim)
        q_all = (x_ng @ wq_ng + bq_ng).reshape(split)
        k_all = (x_ng @ wk_ng + bk_ng).reshape(split)
        # float32 (CPU): gathers, fastest there; narrower (accelerators):
        # matmuls, as gathers and scatters there move far more memory.
        gathers = dtype == jnp.float32
        if gathers:
            sparsity = _sparsity(q_all, k_all, sample_key, n_sample)
        else:
            sparsity = _sparsity_from_scores(q_all, k_all, sample_key, n_sample)
        _, top = jax.lax.top_k(sparsity, n_top)  # (B, H, u)

        # Active queries, projected from their own rows.
        if gathers:
            x_top = jnp.take_along_axis(x[:, None], top[..., None], axis=2)
        else:
            pick = jax.nn.one_hot(top, length, dtype=dtype)  # (B, H, u, L)
            x_top = jnp.einsum("bhul,bld->bhud", pick, x)
        q_top = jnp.einsum("bhud,dhe->bhue", x_top, wq.reshape(by_head))
        q_top = q_top + bq.reshape(heads, 1, head_dim)
        # Scores against every key without K; q.bk is constant per row.
        q_k = jnp.einsum("bhue,dhe->bhud", q_top, wk.reshape(by_head))
        scores = jnp.einsum("bhud,bld->bhul", q_k, x).astype(jnp.float32)
        attn = jax.nn.softmax(scores / math.sqrt(head_dim), axis=-1).astype(dtype)
        # Values without V: attention rows sum to one.
        ctx = jnp.einsum("bhul,bld->bhud", attn, x)
        ctx = jnp.einsum("bhud,dhe->bhue", ctx, wv.reshape(by_head))
        mean_v = jnp.einsum("bd,dhe->bhe", jnp.mean(x, axis=1), wv.reshape(by_head))
        mean_v = mean_v + bv.reshape(heads, head_dim)
        ctx = ctx + bv.reshape(heads, 1, head_dim)

        # Output projection: as if every position of head h held mean_v[h],
        # then, per active query, (ctx - mean_v) placed in its merged slot,
        # projected and added to its merged row (scatter-add).
        rows, slots = merge_positions(length, heads, self.reference_reshape)
        wo_slots = wo.reshape(heads, head_dim, d_model)
        per_slot = jnp.einsum("bhe,jed->bhjd", mean_v, wo_slots)
        out = _project_mean_rows(per_slot, rows, slots, length)
        head_ix = jnp.arange(heads)[None, :, None]
        slot = jax.nn.one_hot(jnp.asarray(slots)[head_ix, top], heads, dtype=dtype)
        delta = slot[..., None] * (ctx - mean_v[:, :, None])[..., None, :]
        delta = delta.reshape(batch, heads, n_top, d_model) @ wo
        row = jnp.asarray(rows)[head_ix, top].reshape(batch, heads * n_top)
        delta = delta.reshape(batch, heads * n_top, d_model)
        if gathers:
            batch_ix = jnp.arange(batch)[:, None]
            out = out.at[batch_ix, row].add(delta)
        else:  # the scatter-add as a one-hot matmul
            place = jax.nn.one_hot(row, length, dtype=dtype)  # (B, H * u, L)
            out = out + jnp.einsum("bnl,bnd->bld", place, delta)
        return out + bo

    def __call__(self, x, mask, *, rngs: nnx.Rngs | None = None):
        """x (B, L, D), mask (B, L) with 1 for real rows -> (B, L, D)."""
        batch, length, d_model = x.shape
        if self.kind == "probsparse" and self.projected:
            n_top, _ = probsparse_top_counts(length, self.factor)
            if n_top < length:
                dtype = self.query.dtype or x.dtype
                return self._probsparse(x.astype(dtype), self._sample_key(rngs))
        split = (batch, length, self.n_heads, d_model // self.n_heads)
        q = self.query(x).reshape(split)
        k = self.key(x).reshape(split)
        v = self.value(x).reshape(split)
        if self.kind == "full":
            key_mask = (mask > 0)[:, None, None, :]
            out = jax.nn.dot_product_attention(
                q, k, v, mask=key_mask, implementation=self.implementation
            )
            out = out.reshape(batch, length, d_model)
        else:
            out = probsparse_attention(q, k, v, self._sample_key(rngs), self.factor)
            if not self.reference_reshape:
                out = out.transpose(0, 2, 1, 3)
            out = out.reshape(batch, length, d_model)
        return self.out(out)
