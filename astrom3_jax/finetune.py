r"""AstroM3 fine-tuning (classification) from the command line.

  python -m astrom3_jax.finetune --config configs/finetune.py:photo,sub10,clip,cpu \
      --config.init_from=runs/clip_cpu --workdir runs/photo_sub10_clip

Starts from --config.init_from (a pre-training or imported-weights workdir, or
a Hub id) or from scratch, trains, then writes the test report (eval.json,
predictions.npz, confusion.png) in the workdir. Running the same command again
resumes an unfinished run. See configs/finetune.py for modes, subsets, presets.
"""

from astrom3_jax import cli
from astrom3_jax.cli import training_command

main = training_command.entry("finetune")

if __name__ == "__main__":
    training_command.define_flags("configs/finetune.py:photo,sub10,clip,cpu")
    cli.main(main)
