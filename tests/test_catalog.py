"""A user's catalogue: parity with the builder, layouts, bad rows, statistics.

The parity tests point a catalogue at the very raw files of dummy_data and
compare with what the TFDS builder writes for the same objects; the
magnitude conversion and the statistics are checked against numbers computed
here by hand.
"""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from astrom3_jax import errors, record_stats
from astrom3_jax.data import (
    catalog,
    catalog_rows,
    catalog_splits,
    catalog_tables,
    datasets,
    lightcurve_features,
    lightcurve_files,
    lightcurve_modes,
    modalities,
    names,
    normalisation,
    photometry_values,
    pipeline,
    release_io,
    schema,
)
from astrom3_jax.data.astrom3_tfds import objects
from astrom3_jax.data.normalisation import NormalisationStats
from tests.helpers.paths import DUMMY
from tests.helpers.release import (
    ASASSN_DAT_HEADER,
    SPLIT_STEMS,
    catalog_row,
    dummy_release_rows,
    extract_dats,
    read_csv_rows,
    write_catalog,
)

SPLIT_DIR = os.path.join(DUMMY, "splits", "full", "42")
INFO = os.path.join(SPLIT_DIR, "info.json")
# Statistics computed here against ones recorded on another CPU (log10 in
# NumPy differs in the last bits between AVX-512 and AVX2 code paths).
STATS_RTOL = 1e-13
RAW_SCALARS = schema.RAW_SCALARS
SPEC_SCALARS = ("raw_spectrum_mean", "raw_spectrum_mad")
LC_FEATURES = ("photometry", "photometry_aux", *RAW_SCALARS[:4])


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """dummy_data's objects as a catalogue in a different folder layout.

    Light curves extracted to <tmp>/curves/*.dat (relative paths ../curves/),
    spectra left in dummy_data (absolute paths for half the rows, relative for
    the others), the table in <tmp>/tables/catalog.csv.
    """
    root = tmp_path_factory.mktemp("layout")
    lc_dir, cat_dir = root / "curves", root / "tables"
    extract_dats(lc_dir)
    cat_dir.mkdir()
    spec_root = os.path.abspath(os.path.join(DUMMY, "spectra"))
    rows = []
    for i, (split, r) in enumerate(dummy_release_rows()):
        row = catalog_row(split, r, lc_dir, spec_root, cat_dir=cat_dir)
        if i % 2:
            row["spectrum"] = os.path.join(spec_root, r["target"], r["spec_filename"])
        rows.append(row)
    path = write_catalog(cat_dir / "catalog.csv", rows)
    return {"root": root, "catalog": path, "lc_dir": lc_dir, "spec_root": spec_root}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("full_42")
    return datasets.prepare("full_42", str(data_dir), DUMMY, num_workers=0)


def _builder_examples(builder):
    out = {}
    for split in SPLIT_STEMS:
        ds = builder.as_data_source(split)
        for i in range(len(ds)):
            ex = ds[i]
            out[ex["name"].decode()] = ex
    return out


def _assert_same(ours, theirs, keys):
    for k in keys:
        a, b = np.asarray(ours[k]), np.asarray(theirs[k])
        assert a.dtype == b.dtype, (k, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b, err_msg=k)


FULL_KEYS = (
    *LC_FEATURES, "spectra", *SPEC_SCALARS, "metadata", "raw_catalogue",
)  # fmt: skip


# --------------------------------------------------------------------- parity
def test_catalogue_rows_equal_builder_examples(layout, built):
    stats = NormalisationStats.from_info_json(INFO)
    out = catalog.preprocess(layout["catalog"], stats, num_workers=0, progress=False)
    assert not out.bad_rows and len(out.examples) == 40
    want = _builder_examples(built)
    for ex in out.examples:
        theirs = want[ex.features["name"]]
        assert ex.present == {"photometry": True, "spectra": True, "metadata": True}
        _assert_same(ex.features, theirs, FULL_KEYS)
        assert ex.label == int(theirs["label"])
        assert ex.features["id"] == theirs["id"].decode()
        assert ex.features["spec_filename"] == theirs["spec_filename"].decode()


def test_worker_processes_keep_row_order_and_values(layout):
    stats = NormalisationStats.from_info_json(INFO)
    serial = catalog.preprocess(layout["catalog"], stats, num_workers=0, progress=False)
    pooled = catalog.preprocess(layout["catalog"], stats, num_workers=2, progress=False)
    assert [e.row for e in pooled.examples] == list(range(40))
    for a, b in zip(serial.examples, pooled.examples, strict=True):
        assert a.id == b.id
        _assert_same(a.features, b.features, FULL_KEYS)


def _light_curve_points(example):
    """A stand-in measurement (picklable): the stored light curve's length."""
    return len(example.features["photometry"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_measure_runs_where_rows_are_parsed(tmp_path, layout, num_workers):
    """iter_processed's `measure` (predict's second-period search) gives each
    good row's value, in row order, in this process and in worker processes
    alike, and None for a bad row; second_period_logit's partial pickles."""
    path, _, _ = _bad_catalog(tmp_path, layout, "unknown_class")
    stats = NormalisationStats.from_info_json(INFO)
    cat = catalog_tables.read_catalog(path)
    got = list(
        catalog.iter_processed(
            cat.rows, stats, catalog=path, num_workers=num_workers,
            measure=_light_curve_points,
        )
    )  # fmt: skip
    assert [row.index for row, *_ in got] == [0, 1, 2, 3, 4]
    for row, example, error, measured in got:
        if row.index == 2:
            assert example is None and error is not None and measured is None
        else:
            assert error is None
            assert measured == len(example.features["photometry"]) > 0
    second = functools.partial(
        lightcurve_modes.example_second_period_logit, stats=stats
    )
    for _, example, _, measured in catalog.iter_processed(
        cat.rows[:2], stats, catalog=path, num_workers=num_workers, measure=second
    ):
        want = lightcurve_modes.second_period_logit(example.features, stats)
        assert np.isfinite(measured) and measured == want


def test_relative_paths_resolve_against_the_table_folder(layout, monkeypatch):
    monkeypatch.chdir(layout["lc_dir"])  # anywhere but the table's folder
    cat = catalog_tables.read_catalog(os.path.relpath(layout["catalog"]))
    row = cat.rows[0]
    assert os.path.isabs(row.lightcurve) and os.path.exists(row.lightcurve)
    assert os.path.dirname(row.lightcurve) == str(layout["lc_dir"])
    assert all(os.path.exists(r.spectrum) for r in cat.rows)


def test_light_curve_only_rows(layout, built, tmp_path):
    want = _builder_examples(built)
    rows = []
    for split, r in dummy_release_rows()[:4]:
        row = catalog_row(
            split, r, layout["lc_dir"], layout["spec_root"], cat_dir=tmp_path
        )
        row.pop("spectrum")
        for c in schema.META_COLS:
            row[c] = ""  # no metadata: every metadata cell blank
        rows.append(row)
    path = write_catalog(tmp_path / "lc_only.csv", rows)
    stats = NormalisationStats.from_info_json(INFO)
    out = catalog.preprocess(path, stats, num_workers=0, progress=False)
    for ex in out.examples:
        assert ex.present == {"photometry": True, "spectra": False, "metadata": False}
        assert "spectra" not in ex.features and "metadata" not in ex.features
        _assert_same(ex.features, want[ex.features["name"]], LC_FEATURES)
        raw = ex.features["raw_catalogue"]
        assert np.isnan(raw[4:]).all() and np.isfinite(raw[:4]).all()


def test_metadata_and_spectrum_only_row(layout, built, tmp_path):
    split, r = dummy_release_rows()[0]
    row = catalog_row(split, r, layout["lc_dir"], layout["spec_root"], cat_dir=tmp_path)
    row.pop("lightcurve")
    path = write_catalog(tmp_path / "c.csv", [row])
    stats = NormalisationStats.from_info_json(INFO)
    (ex,) = catalog.preprocess(path, stats, num_workers=0, progress=False).examples
    assert ex.present == {"photometry": False, "spectra": True, "metadata": True}
    theirs = _builder_examples(built)[r["name"]]
    _assert_same(ex.features, theirs, ("spectra", *SPEC_SCALARS, "metadata"))


@pytest.mark.parametrize("fmt", ["ecsv", "fits", "vot"])
def test_other_table_formats(layout, fmt, tmp_path):
    from astropy.table import Table

    src = Table.read(layout["catalog"], format="ascii.csv")
    src["id"] = src["id"].astype(str)
    path = tmp_path / f"catalog.{fmt}"
    src.write(path, format={"vot": "votable"}.get(fmt))
    ours = catalog_tables.read_catalog(path)
    ref = catalog_tables.read_catalog(layout["catalog"])
    assert [r.id for r in ours.rows] == [r.id for r in ref.rows]
    np.testing.assert_array_equal(  # NaN (blank) equal to NaN
        [r.values for r in ours.rows], [r.values for r in ref.rows]
    )
    assert [r.label for r in ours.rows] == [r.label for r in ref.rows]
    assert [r.split for r in ours.rows] == [r.split for r in ref.rows]


# ------------------------------------------------------------ light curves
def test_magnitude_table_converted_by_hand(tmp_path):
    hjd = [2457000.5, 2457001.5, 2457003.25, 2457010.0]
    mag = [12.0, 12.5, 11.75, 13.0]
    err = [0.01, 0.02, 0.015, 0.05]
    path = tmp_path / "lc.csv"
    with open(path, "w") as f:
        f.write("HJD,Mag,Mag_Err,filter\n")
        for row in zip(hjd, mag, err, strict=True):
            f.write(",".join(map(repr, row)) + ",V\n")
    got = lightcurve_files.read_light_curve_table(path)
    # F = 10^(-0.4 (m - 16.4)) mJy, sigma_F = F * sigma_m * ln(10) / 2.5
    f0 = 10 ** (-0.4 * (12.0 - 16.4))
    assert f0 == pytest.approx(57.543993733715695, rel=1e-12)
    want_flux = [10 ** ((16.4 - m) / 2.5) for m in mag]
    want_err = [fl * e * 0.9210340371976183 for fl, e in zip(want_flux, err, strict=1)]
    np.testing.assert_allclose(got[:, 0], hjd, rtol=0, atol=0)
    np.testing.assert_allclose(got[:, 1], want_flux, rtol=1e-12)
    np.testing.assert_allclose(got[:, 2], want_err, rtol=1e-12)
    zp = lightcurve_files.read_light_curve_table(path, mag_zero_point=20.0)
    np.testing.assert_allclose(zp[:, 1], np.array(want_flux) * 10 ** (0.4 * 3.6))


def test_flux_table_with_units_and_mjd(tmp_path):
    path = tmp_path / "lc.ecsv"
    from astropy.table import Table

    t = Table(
        {
            "MJD": [57000.0, 57001.0, 57002.0],
            "flux(mJy)": [1.0, 2.0, 1.5],
            "flux_err": [0.1, 0.1, 0.2],
            "mag": [16.4, 15.6, 16.0],
        }
    )
    t.write(path)
    got = lightcurve_files.read_light_curve_table(path)  # flux wins over mag
    np.testing.assert_array_equal(
        got, [[57000, 1, 0.1], [57001, 2, 0.1], [57002, 1.5, 0.2]]
    )


def test_dat_and_magnitude_table_of_one_star_agree(layout, tmp_path):
    """The same curve as .dat (flux) and as a magnitude table (mag -> flux)."""
    name = dummy_release_rows()[0][1]["name"]
    lc = lightcurve_files.read_light_curve_file(str(layout["lc_dir"] / f"{name}.dat"))
    mag = 16.4 - 2.5 * np.log10(lc[:, 1])
    mag_err = lc[:, 2] / lc[:, 1] * 2.5 / np.log(10)
    path = tmp_path / "mag.csv"
    with open(path, "w") as f:
        f.write("hjd,mag,mag_err\n")
        for t, m, e in zip(lc[:, 0], mag, mag_err, strict=True):
            f.write(f"{float(t)!r},{float(m)!r},{float(e)!r}\n")
    got = lightcurve_files.read_light_curve_table(path)
    # A table keeps the first row of each time; the release's .dat is used as it is.
    _, first = np.unique(lc[:, 0], return_index=True)
    assert len(first) < len(lc)  # this star has repeated times
    np.testing.assert_allclose(got, lc[np.sort(first)], rtol=1e-12)


# ---------------------------------------------------------------- bad rows


def _bad_catalog(tmp_path, layout, case):
    """4 good rows + one row broken as `case`; returns (path, bad id, file part)."""
    rows = [
        catalog_row(s, r, layout["lc_dir"], layout["spec_root"], cat_dir=tmp_path)
        for s, r in dummy_release_rows()[:5]
    ]
    bad = rows[2]
    file = "catalog.csv"
    if case == "missing_file":
        bad["lightcurve"] = "nowhere/missing.dat"
        file = "missing.dat"
    elif case == "corrupt_fits":
        (tmp_path / "broken.fits").write_bytes(b"SIMPLE  = not a FITS file" * 20)
        bad["spectrum"] = "broken.fits"
        file = "broken.fits"
    elif case == "one_point":
        (tmp_path / "short.dat").write_text(
            ASASSN_DAT_HEADER + "2457000.1 12.0 0.01 5.0 0.1\n"
        )
        bad["lightcurve"] = "short.dat"
        file = "short.dat"
    elif case == "nan_catalogue":
        bad["w3_mag"] = "nan"
        bad["ruwe"] = ""
        file = "catalog.csv"
    elif case == "unknown_class":
        bad["label"] = "CEP"
    elif case == "not_a_number":
        bad["pmra"] = "fast"
    else:
        raise ValueError(case)
    return write_catalog(tmp_path / "catalog.csv", rows), bad["id"], file


BAD_CASES = {
    "missing_file": "not found",
    "corrupt_fits": "unreadable FITS",
    "one_point": "1 distinct point",
    "nan_catalogue": "w3_mag, ruwe",
    "unknown_class": "unknown class 'CEP'",
    "not_a_number": "pmra is not a number",
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_row_strict_names_row_file_and_problem(tmp_path, layout, case):
    path, bad_id, file = _bad_catalog(tmp_path, layout, case)
    stats = NormalisationStats.from_info_json(INFO)
    with pytest.raises(catalog_rows.RowError) as err:
        catalog.preprocess(path, stats, num_workers=0, progress=False)
    msg = str(err.value)
    assert "row 2" in msg and bad_id in msg and file in msg, msg
    assert BAD_CASES[case] in msg, msg
    assert isinstance(err.value, errors.UserError)


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_row_skipped_and_listed(tmp_path, layout, case):
    path, bad_id, file = _bad_catalog(tmp_path, layout, case)
    stats = NormalisationStats.from_info_json(INFO)
    out = catalog.preprocess(
        path, stats, skip_bad=True, max_bad_fraction=0.2, num_workers=0,
        progress=False, bad_rows_path=tmp_path / "bad_rows.csv",
    )  # fmt: skip
    assert [e.row for e in out.examples] == [0, 1, 3, 4]
    (bad,) = out.bad_rows
    assert bad.row == 2 and bad.id == bad_id and file in bad.file
    assert BAD_CASES[case] in bad.reason
    (listed,) = read_csv_rows(tmp_path / "bad_rows.csv")
    assert listed == {"row": "2", "id": bad_id, "file": bad.file, "reason": bad.reason}


def test_max_bad_fraction_enforced(tmp_path, layout):
    path, _, _ = _bad_catalog(tmp_path, layout, "unknown_class")  # 1 of 5 bad
    stats = NormalisationStats.from_info_json(INFO)
    kw = dict(skip_bad=True, num_workers=0, progress=False)
    with pytest.raises(catalog_tables.CatalogError, match=r"1 of 5 rows are bad"):
        catalog.preprocess(path, stats, max_bad_fraction=0.19, **kw)
    assert (
        len(catalog.preprocess(path, stats, max_bad_fraction=0.2, **kw).examples) == 4
    )


def test_blank_rfr_score_takes_the_training_mean(tmp_path, layout):
    split, r = dummy_release_rows()[0]
    row = catalog_row(split, r, layout["lc_dir"], layout["spec_root"], cat_dir=tmp_path)
    row["rfr_score"] = ""
    path = write_catalog(tmp_path / "c.csv", [row])
    stats = NormalisationStats.from_info_json(INFO)
    (ex,) = catalog.preprocess(path, stats, num_workers=0, progress=False).examples
    sources = ex.photometry_values.sources
    assert sources["rfr_score"] == "training_mean"
    assert {sources[c] for c in ("amplitude", "period", "lksl_statistic")} == {
        "catalogue"
    }
    j = list(stats.all_cols).index("rfr_score")
    assert ex.photometry_values.values["rfr_score"] == stats.mean[j]
    assert ex.features["photometry_aux"][3] == 0.0  # z-score of the mean
    assert ex.features["photometry_aux"][1] == pytest.approx(
        (np.log10(float(r["period"])) - stats.mean[1]) / stats.std[1], rel=1e-6
    )


def test_tab_separated_catalogue_and_unused_columns(layout, caplog):
    rows = catalog_tables.read_catalog(layout["catalog"])
    text = open(layout["catalog"]).read().splitlines()
    header = text[0].split(",") + ["light_curve", "Periodd"]
    lines = ["\t".join(header)] + [
        "\t".join(line.split(",") + ["x.dat", "1.0"]) for line in text[1:]
    ]
    assert all("\t" not in c for line in text for c in line.split(","))
    path = os.path.join(os.path.dirname(layout["catalog"]), "catalog_tab.tsv")
    open(path, "w").write("\n".join(lines) + "\n")
    with caplog.at_level("WARNING"):
        got = catalog_tables.read_catalog(path)
    np.testing.assert_array_equal(
        [r.values for r in got.rows], [r.values for r in rows.rows]
    )
    assert [r.lightcurve for r in got.rows] == [r.lightcurve for r in rows.rows]
    assert got.unused_columns == ("light_curve", "Periodd")
    assert "'light_curve' (did you mean 'lightcurve'?)" in caplog.text
    assert "'Periodd' (did you mean 'period'?)" in caplog.text


def test_unreadable_table_is_one_line_saying_what_to_do(tmp_path):
    path = tmp_path / "catalog.dat"
    path.write_bytes(b"\x00\x01 garbage \xff\n\x02")
    with pytest.raises(catalog_tables.CatalogError) as e:
        catalog_tables.read_catalog(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and ".tsv" in msg, msg


def test_table_level_errors(tmp_path):
    def table(text):
        p = tmp_path / "t.csv"
        p.write_text(text)
        return str(p)

    with pytest.raises(catalog_tables.CatalogError, match="no `id` column"):
        catalog_tables.read_catalog(table("name,label\na,EW\n"))
    with pytest.raises(catalog_tables.CatalogError, match="rows 0 and 1"):
        catalog_tables.read_catalog(table("id,label\na,EW\na,EA\n"))
    with pytest.raises(catalog_tables.CatalogError, match="lacks .*ruwe"):
        catalog_tables.read_catalog(
            table("id," + ",".join(schema.META_COLS[:-3]) + "\n")
        )
    with pytest.raises(catalog_tables.CatalogError, match="not found"):
        catalog_tables.read_catalog(tmp_path / "nope.csv")


# -------------------------------------------------------------- statistics
def test_stats_from_release_info_json():
    stats = NormalisationStats.from_info_json(INFO)
    info = json.load(open(INFO))
    # info.json was written on another CPU: NumPy's vectorised log10 differs
    # there in the last bits, so equal to a few float64 ulps, not exactly.
    np.testing.assert_allclose(stats.mean, info["mean"], rtol=STATS_RTOL, atol=0)
    np.testing.assert_allclose(stats.std, info["std"], rtol=STATS_RTOL, atol=0)
    assert stats.all_cols == schema.ALL_COLS and stats.source.endswith("info.json")


def test_stats_json_round_trip_and_workdir(tmp_path):
    stats = NormalisationStats.from_info_json(INFO)
    again = NormalisationStats.from_json(stats.to_json())
    assert again == stats
    path = normalisation.write_stats(tmp_path / "run", stats)
    assert os.path.basename(path) == normalisation.STATS_FILE
    assert normalisation.read_stats(tmp_path / "run") == stats
    # The file is also a valid info.json for the release readers.
    assert release_io.read_info(path)["mean"] == list(stats.mean)


def test_read_stats_refuses_a_workdir_without_them(tmp_path):
    with pytest.raises(normalisation.MissingStatsError) as err:
        normalisation.read_stats(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "python -m astrom3_jax.record_stats" in msg
    assert "info.json" in msg and isinstance(err.value, errors.UserError)


def test_stats_cli_records_info_json(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "astrom3_jax.record_stats",
         "--workdir", str(tmp_path), "--info_json", INFO],
        capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {tmp_path}")
    assert normalisation.read_stats(tmp_path).mean == tuple(
        json.load(open(INFO))["mean"]
    )
    with pytest.raises(errors.ConfigError, match="one of --info_json and --dataset"):
        record_stats.record(str(tmp_path))


def test_stats_of_train_rows_equal_release_info_json(layout):
    """The release's info.json is the statistics of its train CSV (by hand too)."""
    cat = catalog_tables.read_catalog(layout["catalog"])
    train = catalog_splits.assign_splits(cat)["train"]
    stats = catalog_splits.stats_of_rows(train)
    info = json.load(open(INFO))
    # info.json was written on another CPU: NumPy's vectorised log10 differs
    # there in the last bits, so equal to a few float64 ulps, not exactly.
    np.testing.assert_allclose(stats.mean, info["mean"], rtol=STATS_RTOL, atol=0)
    np.testing.assert_allclose(stats.std, info["std"], rtol=STATS_RTOL, atol=0)
    # by hand: log10 period, population std
    period = np.array([r.values[1] for r in train])
    lp = np.log10(period)
    assert stats.mean[1] == pytest.approx(lp.sum() / len(lp), rel=1e-12)
    assert stats.std[1] == pytest.approx(
        np.sqrt(((lp - lp.mean()) ** 2).sum() / len(lp)), rel=1e-12
    )


def test_stats_with_blank_values_use_the_rows_that_have_them():
    table = {c: np.array([1.0, 2.0, 4.0]) for c in schema.ALL_COLS}
    table["ruwe"] = np.array([1.0, np.nan, 3.0])
    stats = NormalisationStats.from_table(table)
    j = schema.ALL_COLS.index("ruwe")
    assert stats.mean[j] == 2.0 and stats.std[j] == 1.0


def test_constant_column_is_refused():
    table = {c: np.array([1.0, 2.0, 4.0]) for c in schema.ALL_COLS}
    table["ruwe"] = np.ones(3)
    with pytest.raises(normalisation.StatsError, match="ruwe"):
        NormalisationStats.from_table(table, source="train rows")


def test_drawn_splits_are_stratified_and_deterministic(layout):
    cat = catalog_tables.read_catalog(layout["catalog"])
    cat = catalog_tables.Catalog(cat.path, cat.rows, cat.has_labels, has_split=False)
    a, b = catalog_splits.assign_splits(cat, 42), catalog_splits.assign_splits(cat, 42)
    assert {s: [r.id for r in v] for s, v in a.items()} == {
        s: [r.id for r in v] for s, v in b.items()
    }
    assert sorted(r.index for v in a.values() for r in v) == list(range(40))
    assert [len(a[s]) for s in ("train", "validation", "test")] == [32, 4, 4]
    # 4 objects of each of 10 classes: the 4 test objects are of 4 classes.
    assert len({r.label for r in a["test"]}) == 4
    assert len({r.label for r in a["validation"]}) == 4
    c = catalog_splits.assign_splits(cat, 0)
    assert [r.id for r in c["test"]] != [r.id for r in a["test"]]


# ------------------------------------------------------ the catalog config
def _unstacked(ex):
    """A catalog-config example with its optional fields' 0-or-1 axis removed."""
    out = dict(ex)
    for m in names.CATALOG_OPTIONAL_MODALITIES:
        for f in objects.optional_fields(m):
            assert out[f].shape[0] == 1, f
            out[f] = out[f][0]
    return out


def test_catalog_config_builds_the_release_examples(layout, built, tmp_path):
    """A catalogue with the release's split column gives the full_42 data set."""
    cat_builder = datasets.prepare(
        "catalog", str(tmp_path), os.path.dirname(layout["catalog"]), num_workers=0
    )
    want = _builder_examples(built)
    for split in SPLIT_STEMS:
        ds = cat_builder.as_data_source(split)
        assert len(ds) == built.info.splits[split].num_examples
        for i in range(len(ds)):
            ex = _unstacked(ds[i])
            theirs = want[ex["name"].decode()]
            _assert_same(ex, theirs, (*FULL_KEYS, "label", "id", "spec_filename"))
    # Both builds record the statistics of their training split: the same.
    ours = datasets.normalisation_stats("catalog", str(tmp_path))
    release = normalisation.stats_of_prepared(built.data_dir)
    # The release build takes its statistics from info.json, written on
    # another CPU; the catalogue build computes them here.
    assert release.mean == NormalisationStats.from_info_json(INFO).mean
    np.testing.assert_allclose(ours.mean, release.mean, rtol=STATS_RTOL, atol=0)
    np.testing.assert_allclose(ours.std, release.std, rtol=STATS_RTOL, atol=0)


def test_catalog_config_incomplete_unlabelled_drawn_split(layout, built, tmp_path):
    rows = []
    for split, r in dummy_release_rows():
        row = catalog_row(
            split, r, layout["lc_dir"], layout["spec_root"], cat_dir=tmp_path
        )
        del row["split"], row["label"]
        rows.append(row)
    rows[5]["spectrum"] = ""  # no spectrum
    rows[6].update(dict.fromkeys(schema.META_COLS, ""))  # no catalogue values
    rows[7]["lightcurve"] = ""  # a light curve is required: a bad row
    write_catalog(tmp_path / "catalog.csv", rows)
    with pytest.raises(catalog_rows.RowError, match=r"row 7 .*lacks photometry"):
        datasets.prepare("catalog", str(tmp_path / "a"), str(tmp_path), num_workers=0)
    b = datasets.prepare(
        "catalog", str(tmp_path / "b"), str(tmp_path), num_workers=0,
        skip_bad=True, max_bad_fraction=0.5,
    )  # fmt: skip
    sizes = {s: b.info.splits[s].num_examples for s in SPLIT_STEMS}
    assert sum(sizes.values()) == 39 and sizes["test"] == 4
    report = datasets.report(b)
    (bad,) = [x for v in report["bad_objects"].values() for x in v]
    assert bad["row"] == 7 and bad["id"] == rows[7]["id"]
    assert sum(a["spectra"] for a in report["absent"].values()) == 1
    assert sum(a["metadata"] for a in report["absent"].values()) == 1
    got = {}
    for split in SPLIT_STEMS:
        ds = b.as_data_source(split)
        got.update({ds[i]["id"].decode(): ds[i] for i in range(len(ds))})
    assert {int(ex["label"]) for ex in got.values()} == {-1}
    no_spec, no_meta = got[rows[5]["id"]], got[rows[6]["id"]]
    assert no_spec["spectra"].shape == (0, 3, schema.SPECTRUM_LENGTH)
    assert no_spec["spec_filename"] == b"" and no_spec["metadata"].shape == (1, 34)
    assert no_meta["metadata"].shape == (0, 34) and no_meta["spectra"].shape[0] == 1
    # Features that do not depend on the split's statistics: as the release's.
    want = _builder_examples(built)[rows[6]["name"]]
    _assert_same(_unstacked({**no_meta, "metadata": want["metadata"][None]}), want,
                 ("photometry", *RAW_SCALARS, "spectra"))  # fmt: skip
    # The pipeline's presence flags follow the stored objects.
    source = b.as_data_source("train")
    batches = pipeline.make_eval_batches(source, batch_size=len(source))
    (batch,) = list(batches)
    ids = [source[i]["id"].decode() for i in range(len(source))]
    for m, row in (("spectra", rows[5]), ("metadata", rows[6])):
        flags = batch[modalities.presence_key(m)]
        want_flags = [0.0 if i == row["id"] else 1.0 for i in ids]
        np.testing.assert_array_equal(flags, want_flags)


# ------------------------------------------------------- the shipped example
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "my_stars")


def test_shipped_example_catalogue():
    cat = catalog_tables.read_catalog(os.path.join(EXAMPLE, "catalog.csv"))
    stats = catalog_splits.stats_of_rows(catalog_splits.assign_splits(cat)["train"])
    out = catalog.preprocess(cat, stats, num_workers=0, progress=False)
    kinds = [tuple(m for m, p in ex.present.items() if p) for ex in out.examples]
    assert kinds.count(("photometry", "spectra", "metadata")) == 8
    assert kinds.count(("photometry", "metadata")) == 3
    assert kinds.count(("photometry",)) == 1
    mag = [r for r in cat.rows if r.lightcurve.endswith("_mag.csv")]
    assert len(mag) == 1 and "photometry" in out.examples[mag[0].index].features
    size = sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(EXAMPLE)
        for f in files
    )
    assert size < 1_000_000


def test_catalog_name():
    n = names.parse("catalog")
    assert (n.release, n.subset, n.split_seed, n.synthetic) == (
        "catalog",
        "full",
        42,
        None,
    )
    assert n.optional_modalities == ("spectra", "metadata")
    assert names.with_subset("catalog", "full") == "catalog"
    with pytest.raises(names.UnknownDatasetError, match="no subset 'sub10'"):
        names.with_subset("catalog", "sub10")
    assert "--manual_dir DIR" in datasets.missing_data_message("catalog", "/d")


# Slow (about a minute on 2 cores): run by `-m slow`, as CI does.
@pytest.mark.slow
def test_light_curve_only_catalog_builds_with_stats_of_measured_values(
    layout, tmp_path, monkeypatch
):
    """A catalogue of ids and light curves only (as downloads come) builds:
    the train split's statistics are those of the measured values, the
    columns no row gives (rfr_score, all metadata) get mean 0, std 1."""
    rows = []
    for split, r in dummy_release_rows():
        row = catalog_row(
            split, r, layout["lc_dir"], layout["spec_root"], cat_dir=tmp_path
        )
        row.update(dict.fromkeys(schema.ALL_COLS, ""), spectrum="")
        rows.append(row)
    write_catalog(tmp_path / "catalog.csv", rows)
    calls = []
    derive = photometry_values.derive
    monkeypatch.setattr(
        photometry_values, "derive", lambda *a: calls.append(1) or derive(*a)
    )
    b = datasets.prepare("catalog", str(tmp_path / "out"), str(tmp_path), num_workers=0)
    monkeypatch.undo()
    # Each light curve measured once: the train rows' numbers are measured
    # for the statistics and reused by their examples.
    assert len(calls) == len(rows)
    stats = datasets.normalisation_stats("catalog", str(tmp_path / "out"))
    # By hand: the measured values of the train rows' light curves.
    measured = {c: [] for c in photometry_values.DERIVABLE}
    for row in rows:
        if row["split"] != "train":
            continue
        lc, _ = lightcurve_files.read_light_curve(tmp_path / row["lightcurve"])
        got = lightcurve_features.derive(*photometry_values.magnitudes(lc))
        for c in measured:
            measured[c].append(got[c])
    train = b.as_data_source("train")
    by_id = {str(train[i]["id"], "utf-8"): train[i] for i in range(len(train))}
    train_rows = [r for r in rows if r["split"] == "train"]
    for k, row in enumerate(train_rows):  # the stored raw values: measured
        raw = by_id[row["id"]]["raw_catalogue"]
        for c in measured:
            assert raw[schema.ALL_COLS.index(c)] == measured[c][k], (row["id"], c)
    for c, v in measured.items():
        v = np.log10(v) if c == "period" else np.asarray(v)
        j = schema.ALL_COLS.index(c)
        assert stats.mean[j] == pytest.approx(v.mean(), rel=1e-12)
        assert stats.std[j] == pytest.approx(v.std(), rel=1e-12)
    for c in ("rfr_score", *schema.META_COLS):
        j = schema.ALL_COLS.index(c)
        assert (stats.mean[j], stats.std[j]) == (0.0, 1.0)
    # Every object was written, with light curves only.
    assert sum(b.info.splits[s].num_examples for s in SPLIT_STEMS) == len(rows)
    ex = b.as_data_source("train")[0]
    assert ex["metadata"].shape == (0, 34) and ex["spectra"].shape[0] == 0
    # A *_derived build measures every row's values, catalogue values or
    # not: the same statistics for those three columns, the catalogue's
    # rfr_score and metadata for the rest.
    derived = datasets.prepare(
        "catalog_derived", str(tmp_path / "derived"),
        os.path.dirname(layout["catalog"]), num_workers=0,
    )  # fmt: skip
    d_stats = normalisation.stats_of_prepared(derived.data_dir)
    for c in photometry_values.DERIVABLE:
        j = schema.ALL_COLS.index(c)
        # (the same numbers, summed in another order: equal to rounding)
        assert d_stats.mean[j] == pytest.approx(stats.mean[j], rel=1e-12)
        assert d_stats.std[j] == pytest.approx(stats.std[j], rel=1e-12)
    plain = catalog_splits.stats_of_rows(
        catalog_splits.assign_splits(catalog_tables.read_catalog(layout["catalog"]))[
            "train"
        ]
    )
    assert (
        d_stats.mean[schema.ALL_COLS.index("rfr_score")]
        == plain.mean[schema.ALL_COLS.index("rfr_score")]
    )
    assert (
        d_stats.mean[schema.ALL_COLS.index("period")]
        != plain.mean[schema.ALL_COLS.index("period")]
    )
