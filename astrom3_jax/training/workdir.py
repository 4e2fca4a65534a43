"""A workdir's model: build it from `config.json`, restore its checkpoint.

A workdir is `config.json` + `checkpoints/` (Orbax, see checkpoints.py).
This module is the one place that turns one into a model; checkpoints.py
only reads and writes state.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from astrom3_jax import errors, models
from astrom3_jax.models import weights
from astrom3_jax.training import checkpoints


def _abstract(tree, sharding=None):
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
    )


def restore_model(
    workdir: str, step=None, *, build_fn: Callable | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """The model of a workdir at `step` (None: best if any, else latest).

    The model is built from `config.model` (its `task` says which kind) with
    zeros for parameters (`models.build_for_restore`: no random initialisation
    to compute); `build_fn(model_config, rngs)` replaces that builder (tests).
    The model comes back in eval mode. Asked for no particular step, a checkpoint that
    does not restore cleanly is moved aside (with a warning) and the next is
    tried: the best first, then the others newest first. An explicit step
    that is corrupt raises CorruptCheckpointError.
    """
    config = checkpoints.load_config(workdir)
    seed = int(config.seed) if "seed" in config else 0
    model = models.build_for_restore(config.model, seed=seed, build_fn=build_fn)
    models.set_eval_seed(model, seed)
    params = nnx.state(model, nnx.Param)
    abstract = _abstract(nnx.to_pure_dict(params))
    with checkpoints.make_manager(workdir) as manager:
        resolved = checkpoints.resolve_step(manager, step)
        if resolved is None:
            raise FileNotFoundError(f"no checkpoint in {manager.directory}")
        if step is None:
            others = sorted(
                (s for s in manager.all_steps() if s != resolved), reverse=True
            )
            _, got = checkpoints.restore_first_good(
                manager,
                lambda s: checkpoints.restore(manager, s, abstract_params=abstract),
                [resolved, *others],
            )
        else:
            got = checkpoints.restore(manager, resolved, abstract_params=abstract)
    nnx.replace_by_pure_dict(params, got["params"])
    nnx.update(model, params)
    model.eval()
    return model, config


def save_model_only(
    workdir: str, model: nnx.Module, config: ml_collections.ConfigDict, step: int = 0
) -> None:
    """A workdir holding only `model` (e.g. imported weights), usable like ours.

    It is marked as the best checkpoint, so `restore_model(workdir)` and
    fine-tuning from this workdir pick it up.
    """
    checkpoints.save_or_check_config(workdir, config)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with checkpoints.make_manager(workdir) as manager:
        checkpoints.save(
            manager,
            step,
            params=params,
            meta={"epoch": 0, "source": "save_model_only"},
            metrics={checkpoints.BEST_METRIC: 0.0},
        )
        manager.wait_until_finished()


# ------------------------------------------------- any model source


WORKDIR_CONFIG = "config.json"
WORKDIR_CHECKPOINTS = "checkpoints"


def is_workdir(path) -> bool:
    path = pathlib.Path(str(path)).expanduser()
    return (path / WORKDIR_CONFIG).is_file() and (path / WORKDIR_CHECKPOINTS).is_dir()


def _not_a_source(path: pathlib.Path) -> errors.UserError:
    """What to say about a folder that holds no model."""
    inside = sorted(p.name for p in path.iterdir() if p.is_dir() and is_workdir(p))
    hint = (
        f" It holds workdirs: {', '.join(inside[:8])}"
        + (" ..." if len(inside) > 8 else "")
        + f"; pass one of them (e.g. {path / inside[0]})."
        if inside
        else ""
    )
    return weights.SourceNotFoundError(
        f"{path} is not a workdir of this project ({WORKDIR_CONFIG} + "
        f"{WORKDIR_CHECKPOINTS}/, written by train, finetune or import_weights) "
        f"nor a published-weights folder ({weights.CONFIG_FILE} + "
        f"{weights.WEIGHTS_FILE}).{hint}"
    )


def load_any(source, *, step=None, cache_dir=None):
    """(model in eval mode, config) from a workdir, a published-weights
    folder or a Hugging Face Hub model id (see astrom3_jax.load_model)."""
    local = pathlib.Path(str(source)).expanduser()
    if local.is_dir() and is_workdir(local):
        return restore_model(str(local), step)
    if local.is_dir() and not weights.is_reference_folder(local):
        raise _not_a_source(local)
    folder = weights.resolve_source(source, cache_dir)
    model, config, _ = weights.import_reference(folder)
    return model, config


def load_any_config(source, *, cache_dir=None) -> ml_collections.ConfigDict:
    """The config of a model source without building the model: a workdir's
    config.json, or the model config of published weights."""
    local = pathlib.Path(str(source)).expanduser()
    if local.is_dir() and is_workdir(local):
        return checkpoints.load_config(str(local))
    if local.is_dir() and not weights.is_reference_folder(local):
        raise _not_a_source(local)
    folder = weights.resolve_source(source, cache_dir)
    ref = weights.read_reference_config(folder / weights.CONFIG_FILE)
    model_config, kind = weights.model_config_from_reference(ref)
    return ml_collections.ConfigDict(
        {"model": model_config, "reference_kind": kind, "imported_from": str(folder)}
    )
