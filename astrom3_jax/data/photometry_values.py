"""The 4 catalogue numbers a light curve carries, filled in where missing.

The light-curve encoder sees amplitude, period, lksl_statistic and rfr_score
as channels. A star outside the ASAS-SN variable-star catalogue has none of
them; `fill` measures the first three from the cleaned light curve
(lightcurve_features.derive) and gives rfr_score, ASAS-SN's random-forest
score, which no light curve alone determines, the training split's mean (its
channel is then 0 after z-scoring, the value that says least). Each value's
source ('catalogue', 'derived' or 'training_mean') is kept for the output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from astrom3_jax.data import schema
from astrom3_jax.data.lightcurve_features import FeatureError, derive

DERIVABLE = ("amplitude", "period", "lksl_statistic")
FILLED = "rfr_score"  # cannot be derived: the training mean stands in
CATALOGUE, DERIVED, TRAINING_MEAN = "catalogue", "derived", "training_mean"


@dataclasses.dataclass(frozen=True)
class PhotometryValues:
    """The 4 values used (schema.PHOTO_COLS order) and where each came from."""

    values: Mapping[str, float]
    sources: Mapping[str, str]

    def as_columns(self) -> dict[str, object]:
        """predictions.csv's columns: each value, then its `<name>_source`."""
        out: dict[str, object] = {}
        for c in schema.PHOTO_COLS:
            out[c] = f"{self.values[c]:.10g}"
            out[f"{c}_source"] = self.sources[c]
        return out


def magnitudes(lc: np.ndarray) -> tuple[np.ndarray, ...]:
    """time, mag, mag_err of an (N, 3) time, flux, flux-error light curve.

    The zero point is irrelevant here: amplitude is a difference of
    magnitudes and the period and Lafler-Kinman statistic do not depend on
    an offset. Points with flux <= 0 (faint, noisy) have no magnitude and
    are left out.
    """
    t, flux, err = (np.asarray(lc[:, j], np.float64) for j in range(3))
    good = np.isfinite(flux) & (flux > 0)
    flux, err = flux[good], err[good]
    return t[good], -2.5 * np.log10(flux), 2.5 / np.log(10.0) * err / flux


def fill(
    given: Mapping[str, float],
    lc: np.ndarray,
    training_mean: Mapping[str, float],
    *,
    derive_all: bool = False,
    measured: Mapping[str, float] | None = None,
) -> PhotometryValues:
    """Catalogue values where given and finite, the rest filled in.

    given: the row's values of schema.PHOTO_COLS (NaN where blank);
    lc: its cleaned (N, 3) time, flux, flux-error light curve;
    training_mean: raw-scale training means, at least of rfr_score;
    derive_all: ignore the given values (a build whose model must see at
    training time what it will see for new stars). measured: what `derive`
    already gave for this light curve (DERIVABLE names), used instead of
    measuring it again. Raises FeatureError (one line) when the light curve
    cannot give what is missing.
    """
    values, sources = {}, {}
    for c in schema.PHOTO_COLS:
        v = float(given.get(c, np.nan))
        if np.isfinite(v) and not derive_all:
            values[c], sources[c] = v, CATALOGUE
    missing = [c for c in DERIVABLE if c not in values]
    if missing:
        if measured is None:
            measured = derive(*magnitudes(lc))
        for c in missing:
            values[c], sources[c] = float(measured[c]), DERIVED
    if FILLED not in values:
        values[FILLED], sources[FILLED] = float(training_mean[FILLED]), TRAINING_MEAN
    return PhotometryValues(
        values={c: values[c] for c in schema.PHOTO_COLS},
        sources={c: sources[c] for c in schema.PHOTO_COLS},
    )


def raw_means(info: Mapping) -> dict[str, float]:
    """Raw-scale training means of the columns without a transform.

    info: an info.json-style mapping (NormalisationStats.as_info()). Only
    untransformed columns can be read back this way, which rfr_score is.
    """
    transformed = {c for cols in info.get("metadata_func", {}).values() for c in cols}
    return {
        c: float(m)
        for c, m in zip(info["all_cols"], info["mean"], strict=True)
        if c not in transformed
    }


__all__ = ["FeatureError", "PhotometryValues", "fill", "magnitudes", "raw_means"]
