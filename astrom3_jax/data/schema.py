"""Names and shapes shared by the raw release, the TFDS builder and its readers.

Kept free of TFDS/JAX imports so the synthetic generator and the pipeline can
use the constants cheaply.
"""

from __future__ import annotations

import numpy as np

# Class ids are the class names sorted alphabetically, as in the published
# release (Rizhko & Bloom 2024, arXiv:2411.08842).
CLASSES = ("DSCT", "EA", "EB", "EW", "HADS", "M", "ROT", "RRAB", "RRC", "SR")

PHOTO_COLS = ("amplitude", "period", "lksl_statistic", "rfr_score")
META_COLS = (
    "mean_vmag", "phot_g_mean_mag", "e_phot_g_mean_mag", "phot_bp_mean_mag",
    "e_phot_bp_mean_mag", "phot_rp_mean_mag", "e_phot_rp_mean_mag", "bp_rp",
    "parallax", "parallax_error", "parallax_over_error", "pmra", "pmra_error",
    "pmdec", "pmdec_error", "j_mag", "e_j_mag", "h_mag", "e_h_mag", "k_mag",
    "e_k_mag", "w1_mag", "e_w1_mag", "w2_mag", "e_w2_mag", "w3_mag", "w4_mag",
    "j_k", "w1_w2", "w3_w4", "pm", "ruwe", "l", "b",
)  # fmt: skip
ALL_COLS = PHOTO_COLS + META_COLS

# The transforms of the published release's info.json (applied in this order).
METADATA_FUNC = {
    "abs": ["mean_vmag", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag",
            "j_mag", "h_mag", "k_mag", "w1_mag", "w2_mag", "w3_mag", "w4_mag"],
    "cos": ["l"],
    "sin": ["b"],
    "log": ["period"],
}  # fmt: skip

# Columns every split CSV must have besides ALL_COLS.
ID_COLS = ("id", "name", "target", "spec_filename")
# Extra ground-truth columns of synthetic releases.
TRUTH_COLS = ("true_target", "subtype")

SUBSETS = ("full", "sub50", "sub25", "sub10")
SEEDS = (42, 0, 66, 12, 123)
# Split names of the release's CSV files -> TFDS split names.
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}
SYNTHETIC_SPLIT_FILES = {**SPLIT_FILES, "unseen": "unseen"}

# Spectra are resampled onto 3850, 3852, ..., 8998 Angstrom.
WAVELENGTH_GRID = np.arange(3850, 9000, 2)
SPECTRUM_LENGTH = len(WAVELENGTH_GRID)  # 2575

# Light-curve auxiliary channels, reference channel order 3..8.
PHOTOMETRY_AUX = ("amplitude", "log_period", "lksl_statistic", "rfr_score",
                  "log10_mad", "delta_t")  # fmt: skip

# Stored per-example raw values that undo the normalisation.
RAW_SCALARS = (
    "raw_flux_mean",  # mean of the light-curve flux (after de-duplication)
    "raw_flux_mad",  # its MAD (scale 1); flux = photometry[:, 1] * mad + mean
    "raw_time_min",  # first HJD; HJD = photometry[:, 0] * (max - min) + min
    "raw_time_max",  # last HJD
    "raw_spectrum_mean",  # mean of the interpolated spectrum flux
    "raw_spectrum_mad",  # MAD of its non-zero values
)
