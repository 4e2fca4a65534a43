r"""AstroM3 CLIP pre-training from the command line.

  python -m astrom3_jax.train --config configs/pretrain.py:cpu \
      --workdir runs/clip_cpu [--config.batch_size=64]

Running the same command again resumes the run in --workdir exactly where
it stopped (even after SIGKILL). See configs/pretrain.py for the variants.
"""

from absl import flags
from ml_collections import config_flags

from astrom3_jax import cli
from astrom3_jax.cli import host_memory

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/pretrain.py:cpu", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.DEFINE_bool(
    "tcmalloc",
    True,
    "On CPU, restart under tcmalloc when it is installed: XLA:CPU steps run "
    "1.4-1.9x faster (see astrom3_jax/cli/host_memory.py).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise cli.errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    # Before importing JAX: this process may be replaced.
    host_memory.reexec_with_tcmalloc(enabled=FLAGS.tcmalloc)
    from astrom3_jax import errors, train_lib
    from astrom3_jax.training import loop, tasks

    task = tasks.clip_task()
    try:
        outcome = train_lib.run(
            FLAGS.config,
            FLAGS.workdir,
            before_training=host_memory.warn_if_slow_allocator,
        )
    except errors.UserError as e:
        loop.say_where_it_stopped(e, task)
        raise
    loop.say(loop.describe(outcome, task))


if __name__ == "__main__":
    cli.main(main)
