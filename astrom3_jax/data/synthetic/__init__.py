"""Synthetic AstroM3-like survey: ASAS-SN light curves, LAMOST spectra, catalogue.

`generate_release(output_dir, preset='small'|'full'|'sky'|'bigsky', seed=0)`
writes a raw release in exactly the Hugging Face Hub layout, plus ground truth
and unseen classes (docs/synthetic/README.md).
"""

from astrom3_jax.data.synthetic.classes import CLASSES, UNSEEN_CLASSES
from astrom3_jax.data.synthetic.release import generate_release

# Bump whenever the generator's output changes for a given seed, so that a
# release cached by the TFDS builder under an older version is regenerated.
GENERATOR_VERSION = "1"

__all__ = ["CLASSES", "GENERATOR_VERSION", "UNSEEN_CLASSES", "generate_release"]
