r"""AstroM3 fine-tuning (classification) from the command line.

  python -m astrom3_jax.finetune --config configs/finetune.py:photo,sub10,clip,cpu \
      --config.init_from=runs/clip_cpu --workdir runs/photo_sub10_clip

Starts from --config.init_from (a pre-training workdir, an imported-weights
workdir or a Hub id) or from scratch, trains, then scores the best
checkpoint on the test split (eval.json, predictions.npz, confusion.png in
the workdir). Running the same command again resumes an unfinished run.
See configs/finetune.py for modes, subsets and presets.
"""

from absl import flags
from ml_collections import config_flags

from astrom3_jax import cli
from astrom3_jax.cli import host_memory

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/finetune.py:photo,sub10,clip,cpu",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, eval.")
flags.DEFINE_bool("tcmalloc", True, "On CPU, restart under tcmalloc if installed.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise cli.errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    host_memory.reexec_with_tcmalloc(enabled=FLAGS.tcmalloc)
    from astrom3_jax import errors, finetune_lib
    from astrom3_jax.training import loop, tasks

    try:
        finetune_lib.finetune_and_evaluate(
            FLAGS.config,
            FLAGS.workdir,
            before_training=host_memory.warn_if_slow_allocator,
        )
    except errors.UserError as e:
        loop.say_where_it_stopped(e, tasks.classification_task())
        raise


if __name__ == "__main__":
    cli.main(main)
