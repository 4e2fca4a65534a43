"""What every command line shares: config lookup, quiet logs, one-line errors.

User errors (`errors.UserError`: a bad config value, an unknown data set, a
workdir made with another config, data that is not prepared) print one
clear line and exit with status 1; anything else is a bug and keeps its
traceback. Logs are quiet (warnings and up) unless `--verbosity` is given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from astrom3_jax import errors

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


def quiet_logs() -> None:
    """absl (and Orbax through it) at WARNING unless --verbosity was given."""
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def main(entry: Callable[[list[str]], None]) -> None:
    """`absl.app.run(entry)` with user errors printed as one line."""
    from absl import app

    def guarded(argv):
        quiet_logs()
        try:
            entry(argv)
        except errors.UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)

    sys.argv = _rewrite_config_args(sys.argv)
    app.run(guarded)
