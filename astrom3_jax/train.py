r"""AstroM3 CLIP pre-training from the command line.

  python -m astrom3_jax.train --config configs/pretrain.py:cpu \
      --workdir runs/clip_cpu [--config.batch_size=64]

Running the same command again resumes the run in --workdir exactly where
it stopped (even after SIGKILL). See configs/pretrain.py for the variants.
"""

from astrom3_jax import cli
from astrom3_jax.cli import training_command

main = training_command.entry("train")

if __name__ == "__main__":
    training_command.define_flags("configs/pretrain.py:cpu")
    cli.main(main)
