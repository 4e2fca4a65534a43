"""Synthetic AstroM3-like survey: ASAS-SN light curves, LAMOST spectra, catalogue.

`generate_release(output_dir, preset='small'|'full'|'sky'|'bigsky', seed=0)`
writes a raw release in exactly the Hugging Face Hub layout, plus ground truth
and unseen classes (docs/synthetic/README.md).
"""

from astrom3_jax.data.names import SYNTHETIC_GENERATOR_VERSION
from astrom3_jax.data.synthetic.classes import CLASSES, UNSEEN_CLASSES
from astrom3_jax.data.synthetic.release import generate_release

GENERATOR_VERSION = SYNTHETIC_GENERATOR_VERSION  # names.py says when it changes

__all__ = ["CLASSES", "GENERATOR_VERSION", "UNSEEN_CLASSES", "generate_release"]
