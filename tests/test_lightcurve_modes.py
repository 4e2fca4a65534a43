"""The second-period number (data/lightcurve_modes.py) against a direct
computation: the residuals of a least-squares harmonic fit and astropy's
exact Lomb-Scargle periodogram, on light curves with one and two modes."""

import numpy as np
import pytest
from astropy.timeseries import LombScargle

from astrom3_jax.data import lightcurve_modes, normalisation, schema


def _curve(n, second_amplitude, seed=0, period=0.33, noise=0.05):
    """ASAS-SN-like sampling: nightly, ~1500 days; a two-harmonic main mode
    and a sinusoid at 0.745 of its frequency (a double-mode RR Lyra)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 1500, n) + rng.uniform(0.3, 0.45, n))
    f0 = 1 / period
    y = 0.4 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.cos(4 * np.pi * f0 * t)
    y += second_amplitude * np.sin(2 * np.pi * 0.745 * f0 * t + 1.0)
    err = np.full(n, noise)
    return t, y + rng.normal(0, noise, n), err


def _direct(t, y, err, period):
    """The same number written out: weighted 4-harmonic fit, exact (cython)
    periodogram of the residuals on the grid, masked grid points dropped."""
    f0 = 1 / period
    span = t.max() - t.min()
    df = 1 / (2 * span)
    lo, hi = lightcurve_modes.BAND
    freq = lo * f0 + df * np.arange(int((hi - lo) * f0 / df))
    near = [abs(freq - (h * f0 + a)) <= 2 / span for h in (1, 2) for a in (-1, 0, 1)]
    keep = ~np.any(near, axis=0)
    sigma = np.sqrt(err**2 + 0.02**2)
    x = 2 * np.pi * f0 * (t - t.min())
    design = np.column_stack(
        [np.ones_like(t)] + [g(k * x) for k in range(1, 5) for g in (np.sin, np.cos)]
    )
    w = 1 / sigma
    coef = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)[0]
    power = LombScargle(t, y - design @ coef, sigma).power(freq, method="cython")
    return power[keep].max(), freq[keep][np.argmax(power[keep])]


@pytest.mark.parametrize("second", [0.0, 0.15])
def test_second_period_power_matches_the_direct_periodogram(second):
    t, y, err = _curve(400, second)
    got = lightcurve_modes.second_period_power(t, y, err, 0.33)
    want, f_best = _direct(t, y, err, 0.33)
    # fasper's extirpolated sums against exact ones: close, not identical
    assert got == pytest.approx(want, abs=0.02)
    if second:
        assert got > 0.5  # the second mode stands out ...
        assert f_best == pytest.approx(0.745 / 0.33, rel=1e-3)  # ... at its frequency
    else:
        assert got < 0.1  # noise only


def test_too_few_points_or_no_band_give_no_second_period():
    t, y, err = _curve(15, 0.15)
    assert lightcurve_modes.second_period_power(t, y, err, 0.33) == 0.0
    t, y, err = _curve(400, 0.15)
    # a period as long as the curve: no frequency in the band is resolvable
    assert lightcurve_modes.second_period_power(t, y, err, 1500.0) == 0.0
    # nothing left once the main period is fitted: no second period
    t, _, err = _curve(400, 0.0)
    y = 0.3 * np.sin(2 * np.pi * t / 0.33)
    assert lightcurve_modes.second_period_power(t, y, err, 0.33) == 0.0
    # a period in the wrong unit (1e-6 d): a capped grid, not 10^10 trials
    got = lightcurve_modes.second_period_power(t, y, err, 1e-6)
    assert 0.0 <= got <= 1.0
    assert lightcurve_modes.logit(0.0) == pytest.approx(np.log(1e-3 / (1 - 1e-3)))
    assert lightcurve_modes.logit(0.5) == 0.0


def test_stored_light_curve_gives_the_same_number():
    """From the stored form (scaled time, flux / MAD, error / MAD, the
    z-scored log period undone with the statistics): the number of the
    curve in days, with the period the statistics give back."""
    t, y, err = _curve(300, 0.15, seed=4)
    stats = normalisation.NormalisationStats(
        mean=tuple(np.linspace(0.1, 1.0, len(schema.ALL_COLS))),
        std=tuple(np.linspace(0.5, 2.0, len(schema.ALL_COLS))),
    )
    j = list(stats.all_cols).index("period")
    aux = np.zeros(len(schema.PHOTOMETRY_AUX), np.float32)
    aux[1] = (np.log10(0.33) - stats.mean[j]) / stats.std[j]
    assert lightcurve_modes.period_days(aux, stats) == pytest.approx(0.33, rel=1e-6)
    mad = 0.2
    features = {
        "photometry": np.column_stack(
            [(t - t.min()) / (t.max() - t.min()), y / mad, err / mad]
        ).astype(np.float32),
        "photometry_aux": aux,
        "raw_time_min": t.min(),
        "raw_time_max": t.max(),
    }
    got = lightcurve_modes.second_period_logit(features, stats)
    want = lightcurve_modes.logit(lightcurve_modes.second_period_power(t, y, err, 0.33))
    assert got == pytest.approx(want, abs=0.05)
    assert got > 0.0
    assert np.isnan(lightcurve_modes.second_period_logit({"name": b"x"}, stats))
