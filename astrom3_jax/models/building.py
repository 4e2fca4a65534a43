"""Building initialised models from a config, and copying weights between them."""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx


def init_model(model_config, seed: int = 0, build_fn: Callable | None = None):
    """A freshly initialised model of `model_config` (its `task` picks the kind).

    Built under `nnx.jit`: one compilation instead of one per initialiser
    (eager initialisation of the paper model takes many seconds on CPU).
    `build_fn(model_config, rngs)` replaces the default builder (tests).
    """
    if build_fn is None:
        from astrom3_jax.models import build_model as build_fn
    return nnx.jit(lambda: build_fn(model_config, nnx.Rngs(seed)))()


def copy_params(dst: nnx.Module, src: nnx.Module, what: str) -> None:
    """Copy every parameter of `src` into `dst`; their structures must agree."""
    got = nnx.state(src, nnx.Param)
    want = nnx.state(dst, nnx.Param)
    a = {p: v[...].shape for p, v in nnx.to_flat_state(got)}
    b = {p: v[...].shape for p, v in nnx.to_flat_state(want)}
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))
        raise ValueError(f"{what}: parameters do not match: {diff[:8]}")
    nnx.update(dst, got)
