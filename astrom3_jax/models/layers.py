"""Layer constructors with PyTorch's default initialisation.

The reference trains from PyTorch defaults, so ours start from the same
distributions (matched here, once, for every Linear and Conv1d):
- weights: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in));
  in JAX terms variance_scaling(1/3, 'fan_in', 'uniform');
- biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in));
- LayerNorm: scale ones, bias zeros (NNX's default too), eps 1e-5.
The Informer token convolution is the one exception (kaiming_normal, see
photometry.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

torch_weight_init = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's Linear/Conv1d bias init."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def compute_dtype(name) -> jnp.dtype:
    """'float32' | 'bfloat16' (or a dtype) -> a jnp dtype."""
    return jnp.dtype(name)


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=None):
    """nnx.Linear initialised like torch.nn.Linear; params always float32."""
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=torch_weight_init,
        bias_init=torch_bias_init(in_features),
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


def conv1d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    rngs: nnx.Rngs,
    padding="VALID",
    use_bias: bool = True,
    kernel_init=torch_weight_init,
    dtype=None,
):
    """A (batch, length, channels) nnx.Conv initialised like torch.nn.Conv1d."""
    return nnx.Conv(
        in_channels,
        out_channels,
        kernel_size=(kernel_size,),
        padding=padding,
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=torch_bias_init(in_channels * kernel_size),
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


def layer_norm(features: int, *, rngs: nnx.Rngs, dtype=None, eps: float = 1e-5):
    """LayerNorm with PyTorch's eps (1e-5, NNX defaults to 1e-6)."""
    return nnx.LayerNorm(
        features, epsilon=eps, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )
