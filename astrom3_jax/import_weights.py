r"""Import the authors' published PyTorch weights, or export ours to that format.

Import (a folder with config.json + model.safetensors, or a Hub model id):
  python -m astrom3_jax.import_weights --source AstroMLCore/AstroM3-CLIP \
      --workdir runs/astrom3_clip [--overwrite]
Export (our workdir -> PyTorch-layout safetensors + config.json):
  python -m astrom3_jax.import_weights --export --workdir runs/pretrain \
      --out exported/ [--step best|latest|N]
"""

from __future__ import annotations

from absl import flags, logging

from astrom3_jax import api, cli, errors
from astrom3_jax.training import workdir as workdir_lib

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string(
        "source",
        None,
        "Published-weights folder (config.json + model.safetensors) or "
        "a Hugging Face Hub model id, e.g. AstroMLCore/AstroM3-CLIP.",
    )
    flags.DEFINE_string(
        "workdir", None, "Import: the workdir to create. Export: the workdir to read."
    )
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Import: replace the config and checkpoints of a workdir that already "
        "holds a model.",
    )
    flags.DEFINE_bool("export", False, "Export --workdir to --out instead.")
    flags.DEFINE_string(
        "out", None, "Export: folder for config.json + model.safetensors."
    )
    flags.DEFINE_string("step", None, "Export: 'best', 'latest' or a step number.")
    flags.DEFINE_string(
        "cache_dir",
        None,
        "Hugging Face cache folder for Hub downloads (default: the shared HF cache).",
    )
    flags.DEFINE_string(
        "info_json",
        None,
        "Import: the release configuration's info.json whose normalisation "
        "statistics the weights were trained with (default: downloaded).",
    )
    flags.DEFINE_string(
        "release_dir",
        None,
        "Import: a local copy of the data release to read that info.json from.",
    )


class CommandError(errors.UserError, RuntimeError):
    """A user mistake reported by a library call as a built-in OS error."""


def _export():
    if FLAGS.out is None:
        raise errors.ConfigError("--export needs --out")
    model, config = workdir_lib.restore_model(FLAGS.workdir, FLAGS.step)
    out = api.export_model(model, config, FLAGS.out)
    logging.info("wrote %s", out)
    print(f"exported {FLAGS.workdir} to {out}")


def _import():
    if FLAGS.source is None:
        raise errors.ConfigError("--source is required (or --export)")
    _, config, ignored = api.import_to_workdir(
        FLAGS.source,
        FLAGS.workdir,
        cache_dir=FLAGS.cache_dir,
        overwrite=FLAGS.overwrite,
        info_json=FLAGS.info_json,
        release_dir=FLAGS.release_dir,
    )
    print(
        f"imported {FLAGS.source} ({config.reference_kind}) into {FLAGS.workdir}; "
        f"recomputed, not loaded: {', '.join(ignored) or 'nothing'}"
    )


def main(argv):
    """Import or export as the flags say.

    Mistakes a user can fix (a missing folder, a Hub id that cannot be
    fetched, a workdir that already holds a model, a damaged weights file, a
    missing flag) print one line, `error: ...`, on stderr and exit with
    status 1, as the training, fine-tuning, export, predict and plan commands
    do (astrom3_jax/cli); the analysis commands use argparse's status 2.
    Library logs below WARNING are hidden unless --verbosity is given.
    """
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments {argv[1:]}")
    if FLAGS.workdir is None:
        raise errors.ConfigError("--workdir is required")
    try:
        if FLAGS.export:
            _export()
        else:
            _import()
    except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if isinstance(e, errors.UserError):
            raise
        raise CommandError(str(e)) from e  # e.g. an export from a missing workdir


if __name__ == "__main__":
    define_flags()
    cli.main(main)
