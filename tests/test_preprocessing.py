"""Every preprocessing step against small examples worked out by hand."""

import math

import numpy as np
import pytest

from astrom3_jax.data import preprocessing as pp
from astrom3_jax.data import schema


# ------------------------------------------------------------------- catalogue
def test_transforms_hand_computed():
    table = {
        "mean_vmag": [12.0, 12.0, 12.0],
        "parallax": [2.0, 0.0, -1.0],  # <= 0 is replaced by 1 (log10 -> 0)
        "l": [60.0, 0.0, 90.0],
        "b": [30.0, -90.0, 0.0],
        "period": [100.0, 0.1, 1.0],
        "ruwe": [1.1, 1.2, 1.3],
    }
    func = {"abs": ["mean_vmag"], "cos": ["l"], "sin": ["b"], "log": ["period"]}
    out = pp.transform_catalogue(table, func)
    np.testing.assert_allclose(out["mean_vmag"], [2 + 5 * 0.30102999566, 2.0, 2.0])
    np.testing.assert_allclose(out["l"], [0.5, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(out["b"], [0.5, -1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(out["period"], [2.0, -1.0, 0.0])
    np.testing.assert_array_equal(out["parallax"], table["parallax"])  # untouched
    np.testing.assert_array_equal(out["ruwe"], table["ruwe"])


def test_abs_uses_untransformed_parallax_and_func_order():
    # 'parallax' itself is never transformed, so abs sees the raw value.
    out = pp.transform_catalogue(
        {"w1_mag": 10.0, "parallax": 10.0}, {"abs": ["w1_mag"]}
    )
    assert out["w1_mag"] == pytest.approx(5.0)


def test_unknown_transform_is_an_error():
    with pytest.raises(ValueError, match="unknown metadata_func transform 'exp'"):
        pp.transform_catalogue({"x": [1.0]}, {"exp": ["x"]})
    with pytest.raises(ValueError, match="lacks"):
        pp.transform_catalogue({"x": [1.0]}, {"log": ["period"]})


def test_stats_are_population_and_zscore():
    table = {
        "period": np.array([10.0, 100.0, 1000.0, 10000.0]),
        "ruwe": np.array([1.0, 2.0, 3.0, 4.0]),
    }
    mean, std = pp.catalogue_stats(table, {"log": ["period"]}, ["period", "ruwe"])
    # log10 periods 1, 2, 3, 4: mean 2.5, population std sqrt(1.25)
    np.testing.assert_allclose(mean, [2.5, 2.5])
    np.testing.assert_allclose(std, [math.sqrt(1.25)] * 2)
    info = {
        "metadata_func": {"log": ["period"]},
        "all_cols": ["period", "ruwe"],
        "mean": [2.5, 1.0],
        "std": [0.5, 2.0],
    }
    row = pp.normalise_catalogue({"period": 1000.0, "ruwe": 4.0}, info)
    np.testing.assert_allclose(row, [(3 - 2.5) / 0.5, (4 - 1) / 2])


def test_default_func_covers_reference_columns():
    assert len(schema.ALL_COLS) == 38 and len(schema.META_COLS) == 34
    assert len(schema.METADATA_FUNC["abs"]) == 11


# ----------------------------------------------------------------- light curve
def test_light_curve_hand_computed():
    # rows (t, flux, err); (1, 1, 1) appears twice, (3, 4, 1) is out of order.
    lc = np.array([[3, 4, 1], [1, 1, 1], [2, 2, 1], [1, 1, 1], [5, 10, 2]], float)
    photo = np.array([0.1, -0.2, 0.3, -0.4])
    out = pp.preprocess_light_curve(lc, photo)
    # distinct sorted: t 1 2 3 5, flux 1 2 4 10, err 1 1 1 2
    # mean 17/4 = 4.25; median 3; |f - 3| = 2 1 1 7 -> MAD 1.5
    expect = np.array(
        [
            [0.0, (1 - 4.25) / 1.5, 1 / 1.5],
            [0.25, (2 - 4.25) / 1.5, 1 / 1.5],
            [0.5, (4 - 4.25) / 1.5, 1 / 1.5],
            [1.0, (10 - 4.25) / 1.5, 2 / 1.5],
        ],
        np.float32,
    )
    assert out["photometry"].dtype == np.float32 and out["photometry"].shape == (4, 3)
    np.testing.assert_allclose(out["photometry"], expect, rtol=1e-6)
    aux = [0.1, -0.2, 0.3, -0.4, math.log10(1.5), 4 / 365]
    np.testing.assert_allclose(out["photometry_aux"], np.float32(aux), rtol=1e-6)
    assert out["raw_flux_mean"] == 4.25 and out["raw_flux_mad"] == 1.5
    assert out["raw_time_min"] == 1 and out["raw_time_max"] == 5


def test_light_curve_same_time_different_flux_is_kept():
    lc = np.array([[1, 1, 1], [1, 3, 1], [2, 2, 1], [4, 8, 1]], float)
    out = pp.preprocess_light_curve(lc, np.zeros(4))
    assert out["photometry"].shape == (4, 3)


def test_light_curve_undo_normalisation():
    rng = np.random.default_rng(0)
    t = 2458000 + np.sort(rng.uniform(0, 900, 50))
    lc = np.stack([t, rng.normal(20, 3, 50), rng.uniform(0.1, 1, 50)], axis=1)
    out = pp.preprocess_light_curve(lc, np.zeros(4))
    ph = out["photometry"].astype(np.float64)
    flux = ph[:, 1] * out["raw_flux_mad"] + out["raw_flux_mean"]
    hjd = ph[:, 0] * (out["raw_time_max"] - out["raw_time_min"]) + out["raw_time_min"]
    np.testing.assert_allclose(flux, lc[:, 1], rtol=1e-6)
    np.testing.assert_allclose(hjd, lc[:, 0], atol=1e-3)


@pytest.mark.parametrize(
    "lc, msg",
    [
        (np.array([[1, 2, 1], [1, 2, 1]], float), "1 distinct point"),
        (np.array([[1, 1, 1], [2, 1, 1], [3, 1, 1], [4, 5, 1]], float), "zero MAD"),
        (
            np.array([[1, 1, 1], [2, np.nan, 1], [3, 2, 1]], float),
            "non-finite value.*FLUX",
        ),
        (
            np.array([[1, 1, 1], [np.inf, 3, 1], [3, 2, 1]], float),
            "non-finite value.*HJD",
        ),
    ],
)
def test_light_curve_bad_input(lc, msg):
    with pytest.raises(pp.PreprocessingError, match=msg):
        pp.preprocess_light_curve(lc, np.zeros(4))


# -------------------------------------------------------------------- spectrum
def test_spectrum_hand_computed_linear_flux():
    wave = np.arange(3000.0, 10001.0, 10.0)
    spec = np.stack([wave, wave, np.full_like(wave, 5.0)], axis=1)  # flux = wavelength
    out = pp.preprocess_spectrum(spec)["spectra"]
    grid = np.arange(3850.0, 8999.0, 2.0)
    assert out.shape == (3, 2575) and out.dtype == np.float32 and len(grid) == 2575
    # flux on the grid is the grid itself: mean (3850 + 8998)/2 = 6424; the
    # absolute deviations are 0, 2, 2, 4, 4, ..., the 1288th smallest is 1288.
    np.testing.assert_allclose(out[0], (grid - 6424) / 1288, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[1], 5 / 1288, rtol=1e-6)
    np.testing.assert_allclose(out[2], math.log10(1288), rtol=1e-6)


def test_spectrum_holds_ends_and_ignores_zeros_in_mad():
    wave = np.array([4000.0, 6000.0, 8000.0])
    spec = np.stack([wave, [0.0, 2.0, 4.0], [1.0, 2.0, 3.0]], axis=1)
    res = pp.preprocess_spectrum(spec)
    grid = np.arange(3850.0, 8999.0, 2.0)
    flux = np.clip((grid - 4000) / 1000, 0, 4)  # 0 below 4000, 4 above 8000
    ivar = np.clip(1 + (grid - 4000) / 2000, 1, 3)
    nz = flux[flux != 0]
    mad = np.median(np.abs(nz - np.median(nz)))
    assert res["raw_spectrum_mean"] == pytest.approx(flux.mean())
    assert res["raw_spectrum_mad"] == pytest.approx(mad)
    np.testing.assert_allclose(
        res["spectra"][0], (flux - flux.mean()) / mad, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(res["spectra"][1], ivar / mad, rtol=1e-6)


@pytest.mark.parametrize(
    "flux, wave, msg",
    [
        ([0.0, 0.0, 0.0], [4000, 5000, 6000], "zero everywhere"),
        ([1.0, np.nan, 2.0], [4000, 5000, 6000], "non-finite value.*flux"),
        ([1.0, 2.0, 3.0], [4000, 6000, 5000], "not strictly increasing"),
        ([3.0, 3.0, 3.0], [4000, 5000, 6000], "zero MAD"),
    ],
)
def test_spectrum_bad_input(flux, wave, msg):
    spec = np.stack([np.array(wave, float), np.array(flux), np.ones(3)], axis=1)
    with pytest.raises(pp.PreprocessingError, match=msg):
        pp.preprocess_spectrum(spec)
