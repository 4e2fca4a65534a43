"""Self-attention for the photometry encoder: Informer ProbSparse, or full.

ProbSparse (Zhou et al. 2021, as in the AstroM3 reference), factor c:
- u = min(c * ceil(ln L), L) "active" queries, and as many sampled keys;
- each query gets `u_keys` keys sampled uniformly with replacement; the
  sample is shared by every batch element and head and drawn from the rng
  stream 'sample' on every call (at evaluation too, like the reference);
- sparsity M(q) = max(sampled scores) - sum(sampled scores) / L;
- the top-u queries of each (batch, head) get softmax(QK^T / sqrt(Dh)) V,
  all other queries get mean(V); no mask and no attention dropout.
The sparsity scores only the sampled keys (one gather per sample, no
gradient); the active queries are then selected with top_k + one-hot
matmuls.

`reference_reshape` reproduces the reference's merge of heads: the
(B, H, L, Dh) output is reshaped row-major straight to (B, L, H * Dh), which
interleaves heads and positions. Published weights need it.

'full' is standard multi-head attention through jax.nn.dot_product_attention
with the padding mask as a key mask (fused kernels on GPU), heads merged
normally.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
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


class SelfAttention(nnx.Module):
    """Multi-head self-attention with query/key/value/out projections."""

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

    def __call__(self, x, mask, *, rngs: nnx.Rngs | None = None):
        """x (B, L, D), mask (B, L) with 1 for real rows -> (B, L, D)."""
        batch, length, d_model = x.shape
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
