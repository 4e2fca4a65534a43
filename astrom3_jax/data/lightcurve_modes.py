"""Does a light curve hold a second period? A number for unfamiliar stars.

A double-mode RR Lyra has the amplitude, period and Lafler-Kinman statistic
of an ordinary RRc; what gives it away is a second pulsation period (the
fundamental mode, at 0.745 of the overtone's frequency). `second_period_logit`
fits the light curve with K_HARMONICS harmonics at its known period, takes
the Lomb-Scargle periodogram of what is left over frequencies BAND times the
main one (where the other modes of multi-mode pulsators lie: the
fundamental at 0.75-0.78 of the first overtone's frequency in RRd and
double-mode HADS stars, delta Scuti modes at 0.6-1.4, and the star's own
main mode when the catalogue period is half of it), leaving out the main
frequency, its first harmonic and their 1/day aliases, and returns the
logit of the highest power (about -7 for nothing,
0 for half the residual variance explained by one sinusoid). A logit
rather than the power: the out-of-distribution score models it with a
Gaussian per class (training/calibration.py).

It is computed from the stored light curve (`photometry`: scaled time,
flux / MAD, error / MAD; `raw_time_min`/`raw_time_max` give days) and the
period the model reads (`photometry_aux`'s log period, undone with the
normalisation statistics), so calibration (on the data set's records) and
predict (on a catalogue row's preprocessed features) compute the same
number from the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from astropy.timeseries import LombScargle

from astrom3_jax.data import lightcurve_features, schema
from astrom3_jax.data.normalisation import NormalisationStats

K_HARMONICS = 4  # harmonics of the main period fitted before the search
# Searched frequencies, in units of the main one. (0.5, 1.6) costs half as
# much (2.2 against 4.8 ms a star on 2 cores) but lowered the OOD score's
# AUROC on synthetic_full by 0.005-0.023 in all six classifiers measured.
BAND = (0.4, 2.5)
OVERSAMPLE = 2  # grid step 1 / (OVERSAMPLE * time span)
ALIAS_HALF_WIDTH = 2.0  # masked around each harmonic and alias, in 1 / span
ERR_FLOOR = 0.02  # added in quadrature to the errors, in y's unit (a zero error)
MIN_POINTS = 20
# At most this many trial frequencies: a period far below any variable
# star's (a catalogue in the wrong unit) gets a coarser grid, not a search
# of hundreds of millions of frequencies.
MAX_FREQUENCIES = 1 << 20
POWER_CLIP = (1e-3, 0.999)  # power range before the logit


def second_period_power(t, y, err, period: float) -> float:
    """The highest Lomb-Scargle power (0..1) of the residuals of a
    K_HARMONICS fit at `period`, over BAND; 0.0 when the band holds no
    frequency the time span can resolve apart from the masked ones.
    t in days; y and err in any one unit."""
    t, y, err = (np.asarray(a, np.float64) for a in (t, y, err))
    span = float(t.max() - t.min()) if len(t) else 0.0
    if len(t) < MIN_POINTS or not span > 0 or not period > 0:
        return 0.0
    f0 = 1.0 / period
    width = (BAND[1] - BAND[0]) * f0
    df = max(1.0 / (OVERSAMPLE * span), width / MAX_FREQUENCIES)
    freq = BAND[0] * f0 + df * np.arange(int(width / df))
    keep = np.ones(len(freq), bool)
    for harmonic in (1, 2):
        for alias in (-1.0, 0.0, 1.0):
            keep &= np.abs(freq - (harmonic * f0 + alias)) > ALIAS_HALF_WIDTH / span
    if keep.sum() < 3:
        return 0.0
    sigma = np.sqrt(err**2 + ERR_FLOOR**2)
    design = lightcurve_features.harmonic_design(t - t.min(), f0, K_HARMONICS)
    coef, *_ = np.linalg.lstsq(design / sigma[:, None], y / sigma, rcond=None)
    resid = y - design @ coef
    if np.sum((resid / sigma) ** 2) <= 1e-12 * len(t):  # nothing left over
        return 0.0  # (the periodogram of rounding errors is noise)
    power = LombScargle(t, resid, sigma).power(
        freq,
        method="fast",
        assume_regular_frequency=True,
        method_kwds=lightcurve_features.FASPER,
    )
    return float(np.clip(np.nanmax(power[keep]), 0.0, 1.0))


def logit(power: float) -> float:
    p = float(np.clip(power, *POWER_CLIP))
    return float(np.log(p / (1 - p)))


def period_days(aux, stats: NormalisationStats) -> float:
    """The period (days) a `photometry_aux` row holds (z-scored log10)."""
    j = list(stats.all_cols).index(schema.PHOTO_COLS[1])
    log_p = float(aux[schema.PHOTOMETRY_AUX.index("log_period")])
    return float(10.0 ** (log_p * stats.std[j] + stats.mean[j]))


def second_period_logit(features: Mapping, stats: NormalisationStats) -> float:
    """`second_period_power`'s logit for an object's stored light-curve
    features (module docstring); NaN for an object without a light curve."""
    if features.get("photometry") is None or features.get("photometry_aux") is None:
        return float("nan")
    lc = np.asarray(features["photometry"], np.float64)
    if lc.ndim != 2 or not len(lc):
        return float("nan")
    days = float(features["raw_time_max"]) - float(features["raw_time_min"])
    period = period_days(features["photometry_aux"], stats)
    return logit(second_period_power(lc[:, 0] * days, lc[:, 1], lc[:, 2], period))


def example_second_period_logit(example, stats: NormalisationStats) -> float:
    """`second_period_logit` of a preprocessed catalogue example (anything
    with `features`): what predict measures for each row, in the process that
    preprocessed it (catalog.iter_processed's `measure`)."""
    return second_period_logit(example.features, stats)
