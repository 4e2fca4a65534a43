"""Photometry encoder: the Informer encoder of the AstroM3 reference.

token conv (circular, kernel 3, no bias) + fixed sinusoidal positions,
dropout 0.1; post-norm layers x = LN1(x + drop(attn(x))),
x = LN2(x + drop(W2 drop(act(W1 x)))); final LayerNorm, dropout, padding
mask, flatten to (B, L * d_model).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from astrom3_jax.models import layers
from astrom3_jax.models.attention import SelfAttention

# The reference initialises its token conv with kaiming_normal(fan_in,
# leaky_relu, a=0): N(0, 2 / fan_in), untruncated.
token_conv_init = jax.nn.initializers.variance_scaling(
    2.0,
    "fan_in",
    "normal",  # untruncated in jax
)


_SQRT_HALF = 0.7071067811865476  # 1/sqrt(2)


def gelu_erf(x):
    """Exact GELU as PyTorch writes it, x/2 * (1 + erf(x/sqrt(2))).

    jax.nn.gelu(approximate=False) goes through erfc, which XLA CPU
    evaluates with piecewise selects about 2.5x slower than erf.
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * _SQRT_HALF))


_ACTIVATIONS = {
    "gelu": gelu_erf,  # exact (erf), not the tanh approximation
    "relu": jax.nn.relu,
}


def position_table(length: int, d_model: int) -> np.ndarray:
    """(length, d_model) float32: sin on even dims, cos on odd dims.

    Computed in float32 the way the reference does, so it equals its saved
    `pe` buffer.
    """
    position = np.arange(length, dtype=np.float32)[:, None]
    div = np.exp(
        np.arange(0, d_model, 2, dtype=np.float32)
        * np.float32(-np.log(10000.0) / d_model)
    ).astype(np.float32)
    table = np.zeros((length, d_model), np.float32)
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div)[:, : d_model // 2]
    return table


class EncoderLayer(nnx.Module):
    """One post-norm Informer layer."""

    def __init__(self, cfg, *, dtype, rngs: nnx.Rngs):
        d, ff = cfg.d_model, cfg.d_ff
        self.attention = SelfAttention(
            d,
            cfg.n_heads,
            kind=cfg.attention,
            factor=cfg.probsparse_factor,
            reference_reshape=cfg.reference_reshape,
            implementation=cfg.attention_impl,
            dtype=dtype,
            rngs=rngs,
        )
        # The reference's kernel-1 Conv1d layers are Linear layers.
        self.ff1 = layers.linear(d, ff, rngs=rngs, dtype=dtype)
        self.ff2 = layers.linear(ff, d, rngs=rngs, dtype=dtype)
        self.norm1 = layers.layer_norm(d, rngs=rngs, dtype=dtype)
        self.norm2 = layers.layer_norm(d, rngs=rngs, dtype=dtype)
        self.dropout = layers.Dropout(cfg.dropout, rngs=rngs)
        self.activation = _ACTIVATIONS[cfg.activation]

    def __call__(self, x, mask, *, rngs=None):
        x = self.norm1(x + self.dropout(self.attention(x, mask, rngs=rngs), rngs=rngs))
        y = self.dropout(self.activation(self.ff1(x)), rngs=rngs)
        y = self.dropout(self.ff2(y), rngs=rngs)
        return self.norm2(x + y)


class Informer(nnx.Module):
    """(B, L, C) light curve + (B, L) mask -> (B, L * d_model)."""

    def __init__(self, cfg, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.seq_len = cfg.seq_len
        self.d_model = cfg.d_model
        self.dtype = dtype
        self.token_conv = layers.conv1d(
            cfg.in_channels,
            cfg.d_model,
            3,
            padding="CIRCULAR",
            use_bias=False,
            kernel_init=token_conv_init,
            dtype=dtype,
            rngs=rngs,
        )
        self.embed_dropout = layers.Dropout(cfg.embed_dropout, rngs=rngs)
        self.layers = nnx.List(
            [EncoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.n_layers)]
        )
        self.norm = layers.layer_norm(cfg.d_model, rngs=rngs, dtype=dtype)
        self.dropout = layers.Dropout(cfg.dropout, rngs=rngs)

    @property
    def output_dim(self) -> int:
        return self.seq_len * self.d_model

    def input_dims(self) -> tuple[tuple, ...]:
        """(seq_len, channels) light curves and their (seq_len,) row masks."""
        return ((self.seq_len, self.token_conv.in_features), (self.seq_len,))

    def __call__(self, photometry, photometry_mask, *, rngs=None):
        batch, length, _ = photometry.shape
        if length != self.seq_len:
            raise ValueError(
                f"photometry has {length} rows, model expects {self.seq_len}"
            )
        pe = jnp.asarray(position_table(length, self.d_model))
        x = self.token_conv(photometry.astype(self.dtype)) + pe.astype(self.dtype)
        x = self.embed_dropout(x, rngs=rngs)
        for layer in self.layers:
            x = layer(x, photometry_mask, rngs=rngs)
        x = self.dropout(self.norm(x), rngs=rngs)
        x = x * photometry_mask[..., None].astype(x.dtype)
        return x.reshape(batch, length * self.d_model)
