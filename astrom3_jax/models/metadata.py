"""Metadata encoder: a two-layer MLP (AstroM3 reference)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from astrom3_jax.models import layers


class MetadataMLP(nnx.Module):
    """(B, input_dim) -> (B, hidden_dim): (Linear, ReLU, dropout) x 2."""

    def __init__(self, cfg, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.fc1 = layers.linear(cfg.input_dim, cfg.hidden_dim, rngs=rngs, dtype=dtype)
        self.fc2 = layers.linear(cfg.hidden_dim, cfg.hidden_dim, rngs=rngs, dtype=dtype)
        self.dropout = layers.Dropout(cfg.dropout, rngs=rngs)
        self._output_dim = cfg.hidden_dim

    @property
    def output_dim(self) -> int:
        return self._output_dim

    def input_dims(self) -> tuple[tuple, ...]:
        """(input_dim,) catalogue vectors."""
        return ((self.fc1.in_features,),)

    def __call__(self, metadata, *, rngs=None):
        x = self.dropout(jax.nn.relu(self.fc1(metadata.astype(self.dtype))), rngs=rngs)
        return self.dropout(jax.nn.relu(self.fc2(x)), rngs=rngs)
