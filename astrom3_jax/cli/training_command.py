"""The body of the `train` and `finetune` commands: one `training.run` from
--config and --workdir, with the allocator and summary the commands share."""

from __future__ import annotations

from collections.abc import Callable

from absl import flags
from ml_collections import config_flags

from astrom3_jax import errors, training
from astrom3_jax.cli import host_memory

FLAGS = flags.FLAGS
TASK_OF_COMMAND = {"train": "clip", "finetune": "classification"}


def define_flags(example: str) -> None:
    """--config (e.g. `example`), --workdir and --tcmalloc."""
    config_flags.DEFINE_config_file(
        "config", None, f"Config file, e.g. {example}", lock_config=True
    )
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, eval.")
    flags.DEFINE_bool(
        "tcmalloc",
        True,
        "On CPU, restart under tcmalloc when it is installed: XLA:CPU steps run "
        "1.4-1.9x faster (see astrom3_jax/cli/host_memory.py).",
    )
    flags.mark_flags_as_required(["config", "workdir"])


def entry(command: str) -> Callable[[list[str]], None]:
    """The absl main of `command` ('train' | 'finetune')."""

    def main(argv):
        if len(argv) > 1:
            raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
        want = TASK_OF_COMMAND[command]
        if FLAGS.config.model.task != want:
            other = next(c for c, t in TASK_OF_COMMAND.items() if t != want)
            raise errors.ConfigError(
                f"{command} runs model.task={want!r} configs, this one is "
                f"{FLAGS.config.model.task!r}: use `python -m astrom3_jax.{other}`"
            )
        # Before importing JAX: this process may be replaced.
        host_memory.reexec_with_tcmalloc(enabled=FLAGS.tcmalloc)
        training.run(
            FLAGS.config,
            FLAGS.workdir,
            before_training=host_memory.warn_if_slow_allocator,
        )

    return main
