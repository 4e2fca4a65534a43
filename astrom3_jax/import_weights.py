"""Import the authors' published PyTorch weights, or export ours to that format.

Import (a folder with config.json + model.safetensors, or a Hub model id):
  python -m astrom3_jax.import_weights --source AstroMLCore/AstroM3-CLIP \
      --workdir runs/astrom3_clip [--overwrite]
Export (our workdir -> PyTorch-layout safetensors + config.json):
  python -m astrom3_jax.import_weights --export --workdir runs/pretrain \
      --out exported/ [--step best|latest|N]

Mistakes a user can fix (a missing folder, a Hub id that cannot be fetched,
a workdir that already holds a model, a damaged weights file) print one line
on stderr and exit with status 1; a missing flag exits with status 2.
Library logs below WARNING are hidden unless --verbosity is given.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

_SOURCE = flags.DEFINE_string(
    "source",
    None,
    "Published-weights folder (config.json + model.safetensors) or "
    "a Hugging Face Hub model id, e.g. AstroMLCore/AstroM3-CLIP.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Import: the workdir to create. Export: the workdir to read."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Import: replace the config and checkpoints of a workdir that already "
    "holds a model.",
)
_EXPORT = flags.DEFINE_bool("export", False, "Export --workdir to --out instead.")
_OUT = flags.DEFINE_string(
    "out", None, "Export: folder for config.json + model.safetensors."
)
_STEP = flags.DEFINE_string("step", None, "Export: 'best', 'latest' or a step number.")
_CACHE = flags.DEFINE_string("cache_dir", None, "Where Hub downloads go.")

PROG = "import_weights"
USAGE_EXIT = 2
ERROR_EXIT = 1


def _step(value):
    return int(value) if value is not None and value.isdigit() else value


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe the user's input, not a bug in this program."""
    from astrom3_jax import api, weights

    return (
        weights.WeightsError,
        api.WorkdirExistsError,
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
        ConnectionError,
    )


def one_line(error: BaseException) -> str:
    """The error's message on a single line."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    return "; ".join(lines) or type(error).__name__


def _fail(message: str, status: int) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _export():
    from astrom3_jax import api, checkpoints

    if _OUT.value is None:
        _fail("--export needs --out", USAGE_EXIT)
    model, config = checkpoints.restore_model(_WORKDIR.value, _step(_STEP.value))
    out = api.export_model(model, config, _OUT.value)
    logging.info("wrote %s", out)
    print(f"exported {_WORKDIR.value} to {out}")


def _import():
    from astrom3_jax import api

    if _SOURCE.value is None:
        _fail("--source is required (or --export)", USAGE_EXIT)
    _, config, ignored = api.import_to_workdir(
        _SOURCE.value,
        _WORKDIR.value,
        cache_dir=_CACHE.value,
        overwrite=_OVERWRITE.value,
    )
    print(
        f"imported {_SOURCE.value} ({config.reference_kind}) into {_WORKDIR.value}; "
        f"recomputed, not loaded: {', '.join(ignored) or 'nothing'}"
    )


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file at INFO
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}", USAGE_EXIT)
    if _WORKDIR.value is None:
        _fail("--workdir is required", USAGE_EXIT)
    try:
        if _EXPORT.value:
            _export()
        else:
            _import()
    except _user_errors() as e:
        _fail(one_line(e), ERROR_EXIT)


if __name__ == "__main__":
    app.run(main)
