"""Layer constructors with PyTorch's default initialisation.

The reference trains from PyTorch defaults, so every Linear, Conv1d and
LayerNorm here starts from the same distributions as torch's.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

# torch's kaiming_uniform(a=sqrt(5)) weight init, i.e.
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for every Linear and Conv1d. The one
# exception is the Informer token convolution (kaiming_normal, photometry.py).
torch_weight_init = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# The evaluation key rule: every forward pass outside training (validation,
# test, export, predict, `embed`) of a run with seed S draws its ProbSparse
# key sample from eval_key(S), so all of them give the same numbers.
EVAL_KEY_SALT = 2**31 - 1


def eval_key(seed: int) -> jax.Array:
    """The evaluation sampling key of a run whose `config.seed` is `seed`."""
    return jax.random.fold_in(jax.random.key(seed), EVAL_KEY_SALT)


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


def _norm_stats(x, eps):
    """float32 (mean, 1 / std) over the last axis."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return mean, jax.lax.rsqrt(var + eps)


def low_precision_layer_norm(x, scale, bias, eps: float):
    """LayerNorm of a bfloat16 (or float16) x: float32 statistics, x's dtype out.

    The backward pass is written out as one pass over x and the incoming
    gradient (the standard closed form), keeping only x and the per-row
    mean and 1/std: what autodiff makes of the forward reads and writes the
    (B, L, D) activations several more times, and on an accelerator the
    step is bound by that memory traffic.
    """
    # Inside shard_map, parameters shared by every device take the sum of the
    # devices' gradients (what autodiff does for them without this rule).
    shared = tuple(sorted(_varying(x) - _varying(scale)))
    return _layer_norm(x, scale, bias, eps, shared)


def _varying(x) -> frozenset:
    """The mesh axes along which `x` differs between devices (under shard_map)."""
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset(getattr(manual, "varying", ()) or ())


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _layer_norm(x, scale, bias, eps, shared):
    del shared
    mean, rstd = _norm_stats(x, eps)
    y = (x.astype(jnp.float32) - mean) * rstd * scale + bias
    return y.astype(x.dtype)


def _layer_norm_fwd(x, scale, bias, eps, shared):
    del shared
    mean, rstd = _norm_stats(x, eps)
    y = (x.astype(jnp.float32) - mean) * rstd * scale + bias
    return y.astype(x.dtype), (x, mean, rstd, scale)


def _layer_norm_bwd(eps, shared, residuals, grad):
    del eps
    x, mean, rstd, scale = residuals
    x_hat = (x.astype(jnp.float32) - mean) * rstd
    g = grad.astype(jnp.float32)
    g_hat = g * scale
    dx = rstd * (
        g_hat
        - jnp.mean(g_hat, axis=-1, keepdims=True)
        - x_hat * jnp.mean(g_hat * x_hat, axis=-1, keepdims=True)
    )
    rows = tuple(range(x.ndim - 1))
    d_scale, d_bias = jnp.sum(g * x_hat, axis=rows), jnp.sum(g, axis=rows)
    if shared:
        d_scale, d_bias = jax.lax.psum((d_scale, d_bias), shared)
    return dx.astype(x.dtype), d_scale, d_bias


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nnx.LayerNorm):
    """nnx.LayerNorm (same parameters) computed in two passes, like PyTorch.

    (x - mean) first, then its mean square: as accurate as PyTorch's, and
    fwd + bwd at (64, 200, 128) takes ~6 ms on a 2-core CPU against ~8.5 ms
    for nnx's E[x^2] - E[x]^2 with its extra casts. In a compute dtype
    narrower than float32 (bfloat16 on accelerators), the statistics are
    float32 and the backward pass is `low_precision_layer_norm`'s.
    """

    def __call__(self, x, *, mask=None):
        if mask is not None or self.reduction_axes != -1 or self.feature_axes != -1:
            return super().__call__(x, mask=mask)
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        if (
            jnp.finfo(dtype).bits < 32
            and self.scale is not None
            and self.bias is not None
        ):
            return low_precision_layer_norm(
                x, self.scale[...], self.bias[...], self.epsilon
            )
        centred = x - jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(var + self.epsilon)
        if self.scale is not None:
            y = y * self.scale[...].astype(dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y


def layer_norm(features: int, *, rngs: nnx.Rngs, dtype=None, eps: float = 1e-5):
    """LayerNorm with PyTorch's eps (1e-5, NNX defaults to 1e-6); scale ones
    and bias zeros, as in PyTorch (NNX's default too)."""
    return LayerNorm(
        features, epsilon=eps, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser: a cheap, well-mixing integer hash."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def hash_keep_mask(key, shape, keep_prob: float):
    """Bernoulli(keep_prob) mask from a counter hash, one 32-bit draw per element.

    Dropout needs uniform, independent-looking bits, not a cryptographic
    generator. Two rounds of fmix32 over (flat index, 64-bit seed from
    `key`) are elementwise, so XLA fuses the mask into the consumer: at
    (64, 200, 512) this takes ~3 ms on a 2-core CPU, threefry's bernoulli
    ~90 ms. Returns (mask, the exact keep probability, a multiple of 2**-32).
    """
    threshold = min(int(round(keep_prob * 2.0**32)), 2**32 - 1)
    seed = jax.random.bits(key, (2,), jnp.uint32)
    counter = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits = _fmix32(_fmix32(counter ^ seed[0]) + seed[1])
    return bits < jnp.uint32(threshold), threshold / 2.0**32


class Dropout(nnx.Dropout):
    """nnx.Dropout with a fast hash-based mask (`impl='hash'`, the default).

    Same streams, train()/eval() and call signature as nnx.Dropout;
    `impl='bernoulli'` gives nnx.Dropout's jax.random.bernoulli masks.
    """

    def __init__(self, rate: float, *, rngs=None, impl: str = "hash"):
        super().__init__(rate, rngs=rngs)
        self.dropout_impl = impl

    def __call__(self, inputs, *, deterministic=None, rngs=None):
        if self.dropout_impl != "hash":
            return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        rngs = self.rngs if rngs is None else rngs
        if rngs is None:
            raise ValueError("Dropout in training mode needs a 'dropout' rng stream")
        if isinstance(rngs, nnx.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        else:
            key = rngs
        mask, keep = hash_keep_mask(key, inputs.shape, 1.0 - self.rate)
        return jnp.where(mask, inputs / jnp.asarray(keep, inputs.dtype), 0).astype(
            inputs.dtype
        )


def set_dropout_impl(module: nnx.Module, model_config) -> None:
    """Apply `config.dropout_impl` ('hash' default | 'bernoulli') to every Dropout."""
    impl = model_config.dropout_impl
    if impl not in ("hash", "bernoulli"):
        raise ValueError(f"dropout_impl must be 'hash' or 'bernoulli', got {impl!r}")
    module.set_attributes(dropout_impl=impl, raise_if_not_found=False)
