"""Light-curve catalogue numbers filled in from the light curve itself:
photometry_values.fill, catalogue rows without them, `_derived` builds."""

import dataclasses
import os
import zipfile

import numpy as np
import pytest

from astrom3_jax import errors
from astrom3_jax.data import (
    catalog,
    catalog_rows,
    names,
    photometry_values,
    preprocessing,
    release_io,
    schema,
)
from astrom3_jax.data.astrom3_tfds import objects
from astrom3_jax.data.lightcurve_features import derive
from astrom3_jax.data.normalisation import NormalisationStats
from astrom3_jax.data.synthetic import lightcurves
from tests.helpers.paths import DUMMY
from tests.helpers.release import dummy_release_rows, write_catalog

INFO = os.path.join(DUMMY, "splits", "full", "42", "info.json")
PERIOD = 2.345


def _star(seed=3, n=250):
    """t, mag, mag_err of a 2.345 d sinusoid at ASAS-SN-like epochs."""
    rng = np.random.default_rng(seed)
    t = lightcurves.sample_times(rng, n)
    n = len(t)  # sample_times may return a few more than asked
    mag = 13.0 + 0.3 * np.sin(2 * np.pi * t / PERIOD) + rng.normal(0, 0.01, n)
    return t, mag, np.full(n, 0.01)


def _flux_curve(t, mag, err, zp=16.4):
    flux = 10 ** (-0.4 * (mag - zp))
    return np.stack([t, flux, flux * err * np.log(10) / 2.5], axis=1)


def _write_skypatrol_v1(path, t, mag, err):
    """A Sky Patrol v1 CSV, V band, one non-detection row."""
    head = "HJD,UT Date,Camera,FWHM,Limit,mag,mag_err,flux(mJy),flux_err,Filter\n"
    lc = _flux_curve(t, mag, err)
    lines = [
        f"{float(a)!r},2019-01-01T00:00:00,bd,1.5,17.1,{float(b)!r},{float(c)!r},"
        f"{float(f)!r},{float(fe)!r},V\n"
        for a, b, c, f, fe in zip(t, mag, err, lc[:, 1], lc[:, 2], strict=True)
    ]
    last = float(t[-1]) + 1.0
    lines.append(f"{last!r},2019-01-02T00:00:00,bd,1.5,15.4,>15.4,99.99,0,0.1,V\n")
    path.write_text(head + "".join(lines))


def test_fill_keeps_given_values_and_derives_the_rest():
    t, mag, err = _star()
    lc = _flux_curve(t, mag, err)
    truth = derive(t, mag, err)  # independent: straight from the magnitudes
    given = {"amplitude": 0.7, "period": np.nan, "lksl_statistic": np.nan}
    out = photometry_values.fill(given, lc, {"rfr_score": 0.61})
    assert out.values["amplitude"] == 0.7
    assert out.values["period"] == pytest.approx(truth["period"], rel=1e-9)
    assert out.values["period"] == pytest.approx(PERIOD, rel=1e-3)
    assert out.values["lksl_statistic"] == pytest.approx(
        truth["lksl_statistic"], rel=1e-9
    )
    assert out.values["rfr_score"] == 0.61
    assert out.sources == {
        "amplitude": "catalogue",
        "period": "derived",
        "lksl_statistic": "derived",
        "rfr_score": "training_mean",
    }
    columns = out.as_columns()
    assert list(columns) == [
        name for c in schema.PHOTO_COLS for name in (c, f"{c}_source")
    ]
    # derive_photometry ignores the catalogue's values.
    every = photometry_values.fill(
        {"amplitude": 0.7, "rfr_score": 0.9}, lc, {"rfr_score": 0.61}, derive_all=True
    )
    assert every.values["amplitude"] == pytest.approx(truth["amplitude"], rel=1e-9)
    assert set(every.sources.values()) == {"derived", "training_mean"}


def test_magnitudes_skip_non_positive_flux():
    lc = np.array([[1.0, 10.0, 1.0], [2.0, -1.0, 1.0], [3.0, 1.0, 0.1]])
    t, mag, err = photometry_values.magnitudes(lc)
    np.testing.assert_array_equal(t, [1.0, 3.0])
    np.testing.assert_allclose(mag, [-2.5, 0.0])
    np.testing.assert_allclose(err, [2.5 / np.log(10) * 0.1] * 2)


def test_raw_means_leave_out_transformed_columns():
    stats = NormalisationStats.from_info_json(INFO)
    info = stats.as_info()
    means = photometry_values.raw_means(info)
    assert "period" not in means  # log10 before z-scoring
    j = info["all_cols"].index("rfr_score")
    assert means["rfr_score"] == info["mean"][j]


def test_skypatrol_download_without_catalogue_columns(tmp_path):
    t, mag, err = _star()
    _write_skypatrol_v1(tmp_path / "star.csv", t, mag, err)
    _, r = dummy_release_rows()[0]
    given = {c: r[c] for c in schema.PHOTO_COLS}
    rows = [
        {"id": "new", "lightcurve": "star.csv"},  # nothing but the download
        {"id": "known", "lightcurve": "star.csv", **given},
    ]
    cat = write_catalog(tmp_path / "catalog.csv", rows)
    stats = NormalisationStats.from_info_json(INFO)
    new, known = catalog.preprocess(cat, stats, num_workers=0, progress=False).examples
    assert new.light_curve.n_points == len(t)
    assert new.light_curve.dropped_nondetection == 1
    pv = new.photometry_values
    assert pv.sources["period"] == "derived"
    assert pv.values["period"] == pytest.approx(PERIOD, rel=1e-3)
    # The light-curve channels are those values through the model's statistics.
    info = stats.as_info()
    expected = preprocessing.normalise_catalogue(
        {c: pv.values.get(c, 0.0) for c in info["all_cols"]}, info
    )[stats.column_slices()[0]]
    np.testing.assert_allclose(new.features["photometry_aux"][:4], expected, rtol=1e-6)
    assert new.features["photometry_aux"][3] == pytest.approx(0.0, abs=1e-6)  # rfr
    assert known.photometry_values.sources == dict.fromkeys(
        schema.PHOTO_COLS, "catalogue"
    )
    assert known.photometry_values.values["period"] == float(given["period"])
    # derive_photometry: the known star's values are measured too.
    again = catalog.preprocess(
        cat, stats, derive_photometry=True, num_workers=0, progress=False
    ).examples[1]
    assert again.photometry_values.values == new.photometry_values.values


def test_too_short_to_derive_is_a_one_line_bad_row(tmp_path):
    t, mag, err = _star(n=12)
    _write_skypatrol_v1(tmp_path / "short.csv", t, mag, err)
    row = {"id": "s", "lightcurve": "short.csv"}
    cat = write_catalog(tmp_path / "catalog.csv", [row])
    stats = NormalisationStats.from_info_json(INFO)
    with pytest.raises(catalog_rows.RowError) as e:
        catalog.preprocess(cat, stats, num_workers=0, progress=False)
    msg = str(e.value)
    assert isinstance(e.value, errors.UserError) and "\n" not in msg
    assert "short.csv" in msg and "row 0" in msg
    assert "cannot derive amplitude, period, lksl_statistic" in msg
    assert "give them as catalogue columns" in msg


def test_derived_names():
    base = names.parse("synthetic_small")
    derived = names.parse("synthetic_small_derived")
    assert derived.derived_photometry and not base.derived_photometry
    assert derived.release == base.release  # the same stars, the same splits
    assert names.parse("sub10_0_derived").subset == "sub10"
    assert names.parse("catalog_derived").catalog


def test_derived_release_rows_store_the_measured_values():
    """objects.process_row with derive_photometry: the stored light-curve
    channels and raw_catalogue hold the values measured from the .dat."""
    folder = os.path.join(DUMMY, "splits", "full", "42")
    csv_path = os.path.join(folder, "train.csv")
    files = objects.ReleaseFiles(
        photometry_zip=os.path.join(DUMMY, "photometry.zip"),
        info_json=os.path.join(folder, "info.json"),
        split_csvs={"train": csv_path},
        spectra_root=os.path.join(DUMMY, "spectra"),
    )
    info = release_io.read_info(files.info_json)
    rows = release_io.read_split_csv(csv_path, schema.ALL_COLS)[:3]
    ctx = objects.Context(files=files, info=info, csv_path=csv_path)
    plain = [ex for _, ex, err in objects.process_rows(rows, ctx, 0) if err is None]
    derived_ctx = dataclasses.replace(ctx, derive_photometry=True)
    out = list(objects.process_rows(rows, derived_ctx, 0))
    assert len(plain) == len(out) == 3
    with zipfile.ZipFile(files.photometry_zip) as archive:
        for (row, ex, err), ref in zip(out, plain, strict=True):
            assert err is None
            lc = release_io.read_light_curve(archive, row["name"])
            measured = derive(*photometry_values.magnitudes(lc))
            raw = dict(zip(schema.ALL_COLS, ex["raw_catalogue"], strict=True))
            for c in photometry_values.DERIVABLE:
                assert raw[c] == pytest.approx(measured[c], rel=1e-12)
            value = {**dict(row), **{c: raw[c] for c in schema.PHOTO_COLS}}
            norm = preprocessing.normalise_catalogue(
                {c: value[c] for c in info["all_cols"]}, info
            )
            photo = [info["all_cols"].index(c) for c in schema.PHOTO_COLS]
            np.testing.assert_allclose(
                ex["photometry_aux"][:4], norm[photo], rtol=1e-5, atol=1e-6
            )
            assert ex["photometry_aux"][3] == pytest.approx(0.0, abs=1e-6)  # rfr
            # Everything else is the plain build's.
            np.testing.assert_array_equal(ex["photometry"], ref["photometry"])
            np.testing.assert_array_equal(ex["metadata"], ref["metadata"])
