"""What every command line shares: config lookup, quiet logs, one-line errors.

`main(entry)` runs a command: user errors print one `error: ...` line and
exit with status 1, anything else keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from astrom3_jax import compile_cache, errors
from astrom3_jax.cli import platform

PACKAGED_CONFIGS = os.path.join(os.path.dirname(__file__), "configs")


def resolve_config_path(value: str) -> str:
    """`configs/x.py:arg` -> the packaged config when the path is not here.

    So `--config configs/pretrain.py:cpu` works from any directory once the
    package is installed, not only from a checkout's root.
    """
    path, sep, arg = value.partition(":")
    if os.path.exists(path):
        return value
    packaged = os.path.join(PACKAGED_CONFIGS, os.path.basename(path))
    if os.path.exists(packaged):
        return packaged + sep + arg
    return value


def _rewrite_config_args(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config="):
            out.append("--config=" + resolve_config_path(a[len("--config=") :]))
        elif a == "--config" and i + 1 < len(argv):
            out += [a, resolve_config_path(argv[i + 1])]
            i += 1
        else:
            out.append(a)
        i += 1
    return out


# Orbax warns on every save without metrics; mid-epoch checkpoints have none
# by design (the best checkpoint is chosen among epoch ends).
_NOISE = ("Requested `tracked_metric`; did not provide metrics",)


def _not_noise(record) -> bool:
    """Drops expected warnings; Orbax's errors keep their line, not their
    traceback (a failed save is reported once, as `error: ...`)."""
    if f"{os.sep}orbax{os.sep}" in (record.pathname or ""):
        record.exc_info, record.exc_text = None, None
    return not any(text in record.getMessage() for text in _NOISE)


def _quiet_unraisable_hook(previous):
    """Drop what a failed Orbax save or read leaves to the garbage collector
    (each would print a traceback after the one-line error)."""

    def hook(unraisable):
        checkpoints = sys.modules.get("astrom3_jax.training.checkpoints")
        if checkpoints is None or not checkpoints.is_orbax_leftover(unraisable):
            previous(unraisable)

    return hook


def quiet_logs() -> None:
    """absl (and Orbax through it) at WARNING unless --verbosity was given,
    without the warnings that are expected in every run, and without Orbax's
    tracebacks of a failure that is reported as one message anyway."""
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
        logger = logging.get_absl_logger()
        if _not_noise not in logger.filters:
            logger.addFilter(_not_noise)
        sys.unraisablehook = _quiet_unraisable_hook(sys.unraisablehook)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text.strip()


def _flag_error_message(text: str) -> str:
    """absl's flag error, without the traceback a failing config file adds."""
    if "Traceback (most recent call last)" not in text:
        return " ".join(line.strip() for line in text.strip().splitlines())
    head = text.strip().splitlines()[0].rstrip(":")
    head = head.replace(": Error whilst parsing config file", "")
    cause = _last_line(text)
    kind, sep, rest = cause.partition(": ")
    if sep and kind.isidentifier():  # 'ValueError: unknown variant ...'
        cause = rest
    return f"{head}: {cause}"


def _unknown_field_message(e: BaseException, argv: list[str]) -> str:
    """`--config.batchsize=3`: which override names a field the config lacks."""
    inner = e
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    text = str(inner.args[0]) if inner.args else str(inner)
    first, *hint = text.splitlines() or [""]
    name = first.strip().strip("'\"")
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    culprit = next(
        (o for o in overrides if name in o[len("--") :].split(".")[1:]),
        overrides[-1] if overrides else "--config",
    )
    message = f"{culprit}: the config has no field {name!r}"
    if hint:
        message += ". " + " ".join(h.strip() for h in hint)
    return message


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with command-line mistakes said in one message.

    The config file is loaded here (ml_collections loads it lazily), so a
    missing file is reported as a flag error rather than as a traceback
    from inside the run.
    """
    from absl import flags

    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS and flags.FLAGS.config is not None:
            flags.FLAGS.config.keys()  # a config that failed to load raises here
        return rest
    except flags.Error as e:
        message = _flag_error_message(str(e))
    except (AttributeError, KeyError) as e:
        message = _unknown_field_message(e, argv)
    except OSError as e:  # the config file cannot be loaded
        message = f"--config: cannot load the config file: {_last_line(str(e))}"
    print(
        f"error: {message}\n(--helpfull lists every flag)", file=sys.stderr, flush=True
    )
    sys.exit(1)


def main(entry: Callable[[list[str]], None], *, cache_compiles: bool = True) -> None:
    """`absl.app.run(entry)` with user errors printed as one message.

    User errors print one clear message (`error: ...`) and exit with status
    1: `errors.UserError` raised by the run (a bad config value, an unknown
    data set, a workdir made with another config, data that is not
    prepared, a failed checkpoint save, a NaN loss), and mistakes on the
    command line itself (a misspelt `--config.<field>`, a config file or
    variant that does not exist, a value of the wrong type; `parse_flags`).
    Anything else is a bug and keeps its traceback. Logs are quiet
    (warnings and up) unless `--verbosity` (`-v`) is given (`quiet_logs`).
    Without an accelerator attached, JAX is pinned to the CPU (`platform`),
    so an installed TPU or GPU runtime stays silent. Compiled programs are
    kept on disk between runs (`astrom3_jax.compile_cache`).

    `cache_compiles=False` for commands whose programs are not for this
    machine (`plan` compiles for described TPUs and GPUs): JAX cannot read
    such programs back from the cache.
    """
    from absl import app

    def guarded(argv):
        quiet_logs()
        try:
            entry(argv)
        except errors.UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)

    platform.pin_cpu_without_accelerator()
    if cache_compiles:
        compile_cache.enable()
    sys.argv = _rewrite_config_args(sys.argv)
    app.run(guarded, flags_parser=parse_flags)
