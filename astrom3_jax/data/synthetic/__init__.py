"""Synthetic AstroM3-like survey: ASAS-SN light curves, LAMOST spectra, catalogue.

`generate_release(output_dir, preset='small'|'full', seed=0)` writes a raw
release in exactly the Hugging Face Hub layout, plus ground-truth columns
(`true_target`, `subtype`) and an `unseen.csv` split of out-of-class objects.
"""

from astrom3_jax.data.synthetic.classes import CLASSES, UNSEEN_CLASSES
from astrom3_jax.data.synthetic.release import generate_release

__all__ = ["CLASSES", "UNSEEN_CLASSES", "generate_release"]
