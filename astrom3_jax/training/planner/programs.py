"""The trainer's own programs and their abstract inputs (shapes, dtypes,
shardings, no data): what a plan lowers and compiles, kept in one place so
that the plan compiles exactly what the trainer and the export run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from astrom3_jax import errors
from astrom3_jax.data import modalities
from astrom3_jax.models import build_model, clip
from astrom3_jax.training import evaluation, loop, optim, sharding, tasks

STEPS = ("train", "eval", "export")


def batch_shapes(config, rows: int) -> dict[str, jax.ShapeDtypeStruct]:
    """A batch of `rows` as the pipeline makes it: model inputs, label, mask.

    Each modality's inputs are its registry entry's batch keys with the dims
    its encoder declares (`input_dims()`); a ranged dim (any length the
    encoder maps to one output) is the length the data carry, the modality
    sub-config's `length`.
    """
    m = config.model
    out = {}
    for name in m.modalities:
        entry = modalities.entry(name)
        encoder = nnx.eval_shape(
            lambda n=name: clip.build_encoder(m, n, rngs=nnx.Rngs(0))
        )
        dims = getattr(encoder, "input_dims", None)
        if dims is None:
            raise errors.ConfigError(
                f"plan needs the input dims of modality {name!r}: give its "
                "encoder an input_dims() method (see data/modalities.py)"
            )
        for key, shape in zip(entry.batch_keys, dims(), strict=True):
            out[key] = tuple(_fixed(d, m[name], key) for d in shape)
    shapes = {k: (v, jnp.float32) for k, v in out.items()}
    shapes["label"] = ((), jnp.int32)
    shapes["mask"] = ((), jnp.float32)
    return {k: jax.ShapeDtypeStruct((rows, *s), d) for k, (s, d) in shapes.items()}


def _fixed(dim, sub_config, key: str) -> int:
    """A declared dim as an int: a (lo, hi) range takes `sub_config.length`."""
    if isinstance(dim, int):
        return dim
    lo, hi = dim
    length = sub_config.get("length")
    if length is None or not lo <= length <= hi:
        raise errors.ConfigError(
            f"{key}: the encoder takes lengths {lo}..{hi}, and its config gives "
            f"no length in that range ({length})"
        )
    return int(length)


def _place(tree, sharding):
    """Abstract arrays of `tree`, each with `sharding`."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
    )


def _abstract_parts(config):
    """(train/eval graphdefs, abstract state, frozen, rest, optimiser, task)."""
    task = tasks.for_config(config)
    model = nnx.eval_shape(lambda: build_model(config.model, nnx.Rngs(config.seed)))
    parts = loop.split_model(model, task.trainable(config))
    tx = optim.make_optimizer(config)
    state = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": parts.params,
        "opt_state": jax.eval_shape(tx.init, parts.params),
    }
    return parts, state, tx, task


def step_programs(config, mesh, batches: dict[str, int]) -> dict:
    """{name: (jitted step, abstract arguments)} for the programs to plan.

    The one place that knows which functions the trainer and the export run.
    """
    parts, state, tx, task = _abstract_parts(config)
    rep = NamedSharding(mesh, P())
    rows = NamedSharding(mesh, P(sharding.AXIS))
    key = _place(jax.eval_shape(lambda: jax.random.key(0)), rep)
    frozen, rest = _place(parts.frozen, rep), _place(parts.rest, rep)
    out = {}
    if "train" in batches:
        step = loop.make_train_step(parts.train_def, tx, mesh, task)
        lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
        batch = _place(batch_shapes(config, batches["train"]), rows)
        out["train"] = (step, (_place(state, rep), frozen, rest, batch, lr, key))
    # Validation runs the task's eval function; the export (and predict) the
    # model's own per-row outputs: both through the one evaluation path.
    outputs_fns = {"eval": task.eval_fn, "export": evaluation.model_outputs}
    for name, outputs_fn in outputs_fns.items():
        if name in batches:
            step = evaluation.make_predict_step(parts.eval_def, mesh, outputs_fn)
            batch = _place(batch_shapes(config, batches[name]), rows)
            params = _place(state["params"], rep)
            out[name] = (step, (params, frozen, rest, batch, key))
    return out
