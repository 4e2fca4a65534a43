"""Run directories: `<workdir>/config.json` and Orbax checkpoints.

Keeps the latest checkpoint (for resume) and the best by validation metric
(for use), with checksums; the workdir layout is in docs/design.md.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sys
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers as cm

from astrom3_jax import errors

CONFIG_FILE = "config.json"
CKPT_DIR = "checkpoints"
BEST_METRIC = "val_accuracy"  # maximised; the reference keeps best-by-accuracy
CHECKSUM_KEY = "params_sha256"
TRAIN_CHECKSUM_KEY = "train_sha256"
CORRUPT_SUFFIX = ".corrupt"


# ------------------------------------------------------------------ configs


def _tuples(x):
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return tuple(_tuples(v) for v in x)
    return x


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return config.to_json(indent=2, sort_keys=True)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """A ConfigDict from JSON; lists come back as tuples, as configs write them."""
    return ml_collections.ConfigDict(_tuples(json.loads(text)))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: not an astrom3_jax workdir")
    return config_from_json(path.read_text())


def _diff(a: dict, b: dict, prefix="") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"  {prefix}{k}: workdir has {va!r}, now {vb!r}")
    return out


# What a run scores, not what it trains: a resumed or finished run may be
# scored differently (e.g. a test report with a modality withheld added).
SCORING_FIELDS = ("evals",)


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError if `workdir` holds a run made with another config.

    Reads only `<workdir>/config.json`: the entry functions call it before
    opening any data, so a wrong --workdir fails at once.
    """
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        return
    new = json.loads(config_to_json(config))
    try:
        old = json.loads(path.read_text())
    except ValueError as e:
        raise errors.ConfigError(f"{path} is not valid JSON ({e})") from e
    for field in SCORING_FIELDS:
        old.pop(field, None)
        new.pop(field, None)
    if old != new:
        raise errors.ConfigError(
            f"{workdir} holds a run with a different config:\n"
            + "\n".join(_diff(old, new))
            + "\nUse a new --workdir, or the same config to resume."
        )


def save_or_check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Write config.json, or check that the workdir was made with this config.

    A resumed run must use the same config, or it would silently continue a
    different experiment from someone else's optimizer state.
    """
    path = epath.Path(workdir) / CONFIG_FILE
    if path.exists():
        check_config(workdir, config)
        return
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / (CONFIG_FILE + ".tmp")
        tmp.write_text(config_to_json(config))
        os.replace(tmp, path)


# -------------------------------------------------------------- the manager


def make_manager(workdir: str, *, keep_best: int = 1) -> ocp.CheckpointManager:
    """Latest + best-by-validation-accuracy checkpoints in <workdir>/checkpoints.

    Both are kept through a preservation policy: `best_fn` with `max_to_keep`
    alone may delete the latest checkpoint and break resume.
    """
    best = lambda m: m[BEST_METRIC]
    policy = cm.AnyPreservationPolicy(
        [
            cm.LatestN(n=1),
            cm.BestN(
                get_metric_fn=best,
                reverse=False,  # ascending: the last n (highest) are kept
                n=keep_best,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=best,
        best_mode="max",
        keep_checkpoints_without_metrics=False,
        create=True,
        # Step directories are created in the caller's thread, so a failed
        # mkdir (disk full, `checkpoints` being a file) raises here. Created in
        # Orbax's background threads, it left the threads writing the arrays
        # waiting 300 s for a "directory created" signal, and the process
        # could not exit meanwhile.
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
    )
    return ocp.CheckpointManager(
        epath.Path(workdir).absolute() / CKPT_DIR, options=options
    )


def close_manager(manager: ocp.CheckpointManager) -> None:
    """Close `manager`; a failed background save is raised (once).

    Orbax stops closing at the first error it raises: closing again frees
    the rest (its writer threads and metadata stores).
    """
    try:
        manager.close()
    except Exception:
        with contextlib.suppress(Exception):
            manager.close()
        raise


def check_can_save(workdir: str) -> None:
    """Fail now, not after an epoch of training, if checkpoints cannot be written.

    Creates `<workdir>/checkpoints` and writes and removes a small file in it.
    """
    directory = epath.Path(workdir).absolute() / CKPT_DIR
    if directory.exists() and not directory.is_dir():
        raise errors.CheckpointSaveError(
            f"cannot write checkpoints in {directory}: it is a file, not a folder. "
            "Move it away, or use another --workdir."
        )
    probe = directory / f".write_test.{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise errors.CheckpointSaveError(
            f"cannot write checkpoints in {directory}: {type(e).__name__}: {e}. "
            "Fix the directory (it must be a writable folder), or use another "
            "--workdir."
        ) from e


def params_checksum(params) -> str:
    """SHA-256 over every array of a tree (paths, dtypes, shapes, bytes).

    Stored in each checkpoint's meta (for the parameters and for the train
    state) and checked on restore, so a corrupted file is noticed instead of
    silently restored.
    """
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    digest = hashlib.sha256()
    for path, leaf in sorted(flat, key=lambda kv: jax.tree_util.keystr(kv[0])):
        arr = np.ascontiguousarray(np.asarray(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _nonfinite_paths(tree) -> list[str]:
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return [
        jax.tree_util.keystr(path)
        for path, leaf in flat
        if np.asarray(leaf).dtype.kind in "fc" and not np.all(np.isfinite(leaf))
    ]


def save(
    manager: ocp.CheckpointManager,
    step: int,
    *,
    params,
    train_state=None,
    meta: dict | None = None,
    metrics: dict | None = None,
) -> None:
    """Save one checkpoint (asynchronously; call `manager.wait_until_finished`).

    Refuses non-finite parameters (errors.NonFiniteError, nothing written): a
    NaN model must never become `best` or the checkpoint a run resumes from.
    """
    bad = _nonfinite_paths(params)
    if bad:
        shown = ", ".join(bad[:5]) + (
            f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        )
        raise errors.NonFiniteError(
            f"refusing to save checkpoint {step} in {manager.directory}: "
            f"{len(bad)} parameter arrays hold NaN/inf ({shown})"
        )
    meta = dict(meta or {})
    meta[CHECKSUM_KEY] = params_checksum(params)
    items = {"params": ocp.args.StandardSave(params)}
    if train_state is not None:
        meta[TRAIN_CHECKSUM_KEY] = params_checksum(train_state)
        items["train"] = ocp.args.StandardSave(train_state)
    items["meta"] = ocp.args.JsonSave(meta)
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


STEP_CHOICES = "'best', 'latest' or a step number"


def parse_step(value) -> str | int | None:
    """A step as users write it: None, 'best', 'latest', an int or its digits.

    The one parser of steps: command-line flags, config fields
    (`init_from_step`) and library arguments all come through here.
    """
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("best", "latest"):
        return text
    if text.isdigit():
        return int(text)
    raise errors.ConfigError(f"step {value!r}: expected {STEP_CHOICES}")


def resolve_step(manager: ocp.CheckpointManager, step=None) -> int | None:
    """An int step from None (best, else latest) | 'best' | 'latest' | int."""
    step = parse_step(step)
    if step is None:
        step = manager.best_step()
        return manager.latest_step() if step is None else step
    if step == "best":
        best = manager.best_step()
        if best is None:
            raise FileNotFoundError(
                f"no checkpoint with validation metrics in {manager.directory}"
            )
        return best
    if step == "latest":
        return manager.latest_step()
    return step


class CorruptCheckpointError(errors.UserError, RuntimeError):
    """A checkpoint that cannot be read back, or reads back altered."""


def error_reason(e: BaseException) -> str:
    """The innermost cause of a failed read, in one short line.

    Orbax wraps TensorStore's errors ('OUT_OF_RANGE: ... local file X ...')
    in exceptions whose own text is a page of JSON spec.
    """
    seen = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    inner = seen[-1]
    text = (str(inner).strip().splitlines() or [""])[0]
    text = text.split(" [tensorstore_spec")[0]
    if len(text) > 400:
        text = text[:400] + " ..."
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def is_orbax_leftover(unraisable) -> bool:
    """Whether an unraisable exception (sys.unraisablehook) is debris of a
    failed Orbax read or write: an unfinished coroutine, a closed loop."""
    code = getattr(unraisable.object, "cr_code", None)  # a coroutine
    if code is not None and "orbax" in code.co_filename:
        return True
    value = unraisable.exc_value
    return isinstance(value, RuntimeError) and "Event loop is closed" in str(value)


@contextlib.contextmanager
def quiet_orbax_leftovers():
    """Orbax leaves the reads or writes of a failed restore or save
    unfinished; when they are finalised, Python prints each one's exception
    ('Exception ignored in <coroutine ...>', 'Event loop is closed', a
    traceback, a page of TensorStore spec) after our one-line reason. Those,
    and only those, are dropped inside this block (with --verbosity=1 a
    failed restore is logged in full instead)."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not is_orbax_leftover(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", "coroutine .* was never awaited", RuntimeWarning
            )
            gc.collect()
        sys.unraisablehook = previous


def restore(
    manager: ocp.CheckpointManager,
    step: int,
    *,
    abstract_params,
    abstract_train_state=None,
) -> dict[str, Any]:
    """Restore params (+ train state) and meta of `step` into the given shapes.

    Raises CorruptCheckpointError when a file is missing, truncated or
    unreadable, or when the arrays do not match the checksums saved with
    them. (Checkpoints written before the checksums existed are not checked.)
    """
    where = f"checkpoint {step} in {manager.directory}"
    items = {
        "params": ocp.args.StandardRestore(abstract_params),
        "meta": ocp.args.JsonRestore(),
    }
    if abstract_train_state is not None:
        items["train"] = ocp.args.StandardRestore(abstract_train_state)
    failure = None
    with quiet_orbax_leftovers():
        try:
            got = dict(manager.restore(step, args=ocp.args.Composite(**items)).items())
        except Exception as e:  # noqa: BLE001  Orbax raises many kinds for bad files
            failure = e
            logging.debug("Reading %s failed.", where, exc_info=True)
    if failure is not None:
        raise CorruptCheckpointError(
            f"{where} cannot be read: {error_reason(failure)}"
        ) from failure
    meta = got.get("meta")
    if not isinstance(meta, dict):
        raise CorruptCheckpointError(
            f"{where}: its meta (JSON) is missing or unreadable"
        )
    checks = [("params", "parameters", CHECKSUM_KEY)]
    if abstract_train_state is not None:
        checks.append(("train", "optimiser state", TRAIN_CHECKSUM_KEY))
    for item, what, key in checks:
        want = meta.get(key)
        if want is not None and params_checksum(got[item]) != want:
            raise CorruptCheckpointError(
                f"{where}: the {what} do not match the checksum saved with them "
                f"(a corrupted file under {manager.directory / str(step) / item})"
            )
    return got


def restore_newest_good(manager: ocp.CheckpointManager, restore_fn, steps=None):
    """`restore_fn(step)` on the newest step that restores cleanly.

    A checkpoint that fails is moved aside to `<step>.corrupt` (nothing is
    deleted) with a warning saying why, and the next older one is tried.
    Returns (step, result), or (None, None) when there is no checkpoint.
    """
    steps = sorted(manager.all_steps() if steps is None else steps, reverse=True)
    return restore_first_good(manager, restore_fn, steps)


def restore_first_good(manager: ocp.CheckpointManager, restore_fn, steps):
    """`restore_fn(step)` on the first of `steps` (in order) that restores.

    See `restore_newest_good`; raises CorruptCheckpointError when every one
    of `steps` fails.
    """
    reasons = []
    for step in steps:
        try:
            return step, restore_fn(step)
        except CorruptCheckpointError as e:
            moved = _move_aside(manager, step)
            reasons.append(f"  {e}")
            message = f"skipping checkpoint {step}: {e}"
            if moved:
                message += f"; moved it aside to {moved}"
            logging.warning("%s", message)
            if jax.process_index() == 0:
                print(f"warning: {message}", flush=True)
    if reasons:
        raise CorruptCheckpointError(
            f"no checkpoint in {manager.directory} restores cleanly (each was moved "
            "aside to <step>.corrupt, nothing was deleted):\n"
            + "\n".join(reasons)
            + "\nStarting the same command again trains from scratch. If the files "
            "are sound and the model code changed instead, rename them back."
        )
    return None, None


def _move_aside(manager, step: int) -> str | None:
    """Rename `<step>` to `<step>.corrupt` (`.corrupt.1`, ... if taken)."""
    moved = None
    if jax.process_index() == 0:
        src = epath.Path(manager.directory) / str(step)
        if src.exists():
            dst = src.parent / f"{step}{CORRUPT_SUFFIX}"
            n = 0
            while dst.exists():
                n += 1
                dst = src.parent / f"{step}{CORRUPT_SUFFIX}.{n}"
            src.rename(dst)
            moved = str(dst)
    manager.reload()
    return moved
