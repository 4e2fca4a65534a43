"""The TFDS builder end to end on dummy_data: sizes, schema, values, bad input.

Expected values are recomputed here from the raw files with numpy/astropy
(the published normalisation of Rizhko & Bloom 2024), independently of
astrom3_jax.data.preprocessing.
"""

import csv
import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from astropy.io import fits

from astrom3_jax.data import datasets as build
from astrom3_jax.data.astrom3_tfds import astrom3_dataset_builder as astrom3
from tests.helpers.paths import DUMMY
from tests.helpers.records import split_records
from tests.helpers.release import (
    ASASSN_DAT_HEADER,
    SPLIT_STEMS,
    as_str,
    edit_first_train_row,
    examples_by_name,
    prepare_in_process,
    read_csv_rows,
    rewrite_dat,
    write_csv,
)

CLASSES = ["DSCT", "EA", "EB", "EW", "HADS", "M", "ROT", "RRAB", "RRC", "SR"]


# ------------------------------------------------------------ good builds
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = {}
    for config, sub, seed in (("full_42", "full", 42), ("sub10_0", "sub10", 0)):
        data_dir = tmp_path_factory.mktemp(config)
        out[config] = (prepare_in_process(config, data_dir, DUMMY), sub, seed)
    return out


@pytest.mark.parametrize(
    "config,sizes", [("full_42", (20, 10, 10)), ("sub10_0", (10, 5, 5))]
)
def test_split_sizes_match_csv(built, config, sizes):
    builder, sub, seed = built[config]
    for (split, stem), n in zip(SPLIT_STEMS.items(), sizes, strict=True):
        rows = read_csv_rows(
            os.path.join(DUMMY, "splits", sub, str(seed), f"{stem}.csv")
        )
        assert len(rows) == n
        assert builder.info.splits[split].num_examples == n
        assert len(builder.as_data_source(split)) == n
    rep = build.report(builder)
    assert rep["written"] == dict(zip(SPLIT_STEMS, sizes, strict=True))
    assert rep["skipped"] == {s: 0 for s in SPLIT_STEMS}


def test_feature_shapes_and_dtypes(built):
    builder, _, _ = built["sub10_0"]
    for ex in examples_by_name(builder, "train").values():
        n = ex["photometry"].shape[0]
        assert ex["photometry"].shape == (n, 3) and n > 1
        assert ex["photometry"].dtype == np.float32
        assert ex["photometry_aux"].shape == (6,)
        assert ex["photometry_aux"].dtype == np.float32
        assert ex["spectra"].shape == (3, 2575) and ex["spectra"].dtype == np.float32
        assert ex["metadata"].shape == (34,) and ex["metadata"].dtype == np.float32
        assert np.issubdtype(np.asarray(ex["label"]).dtype, np.integer)
        assert ex["raw_catalogue"].shape == (38,)
        assert ex["raw_catalogue"].dtype == np.float64
        for k in astrom3.schema.RAW_SCALARS:
            assert np.asarray(ex[k]).dtype == np.float64, k
        for k in ("id", "name", "spec_filename"):
            assert isinstance(ex[k], bytes), k


# ---------------------------------------------- independent recomputation
def _mad(x):
    return np.median(np.abs(x - np.median(x)))


def _raw_light_curve(name):
    with zipfile.ZipFile(os.path.join(DUMMY, "photometry.zip")) as z:
        text = z.read(f"vardb_files/{name}.dat").decode()
    data = np.loadtxt(io.StringIO(text), skiprows=2).reshape(-1, 5)
    return data[:, [0, 3, 4]]


def _raw_spectrum(path):
    with fits.open(path) as h:
        if len(h) == 1:
            img, hd = h[0].data.astype(np.float64), h[0].header
            wave = 10 ** (hd["COEFF0"] + np.arange(hd["NAXIS1"]) * hd["COEFF1"])
            return wave, img[0], img[1]
        row = h[1].data[0]
        return (
            np.asarray(row[2], np.float64),
            np.asarray(row[0], np.float64),
            np.asarray(row[1], np.float64),
        )


def _normalised_catalogue(row, info):
    parallax = float(row["parallax"])
    plx = parallax if parallax > 0 else 1.0
    out = []
    for c in info["all_cols"]:
        v = float(row[c])
        if c in info["metadata_func"].get("abs", []):
            v = v - 10 + 5 * np.log10(plx)
        if c == "l":
            v = np.cos(np.radians(v))
        if c == "b":
            v = np.sin(np.radians(v))
        if c == "period":
            v = np.log10(v)
        out.append(v)
    return (np.array(out) - np.array(info["mean"])) / np.array(info["std"])


def test_one_object_recomputed_from_raw_files(built):
    builder, sub, seed = built["full_42"]
    folder = os.path.join(DUMMY, "splits", sub, str(seed))
    info = json.load(open(os.path.join(folder, "info.json")))
    assert info["all_cols"] == list(astrom3.schema.ALL_COLS)
    row = read_csv_rows(os.path.join(folder, "test.csv"))[0]
    ex = examples_by_name(builder, "test")[row["name"]]
    tol = dict(rtol=1e-5, atol=1e-5)

    assert int(ex["label"]) == sorted(CLASSES).index(row["target"])
    assert (
        as_str(ex["id"]) == row["id"]
        and as_str(ex["spec_filename"]) == row["spec_filename"]
    )
    np.testing.assert_array_equal(
        ex["raw_catalogue"], [float(row[c]) for c in astrom3.schema.ALL_COLS]
    )

    norm = _normalised_catalogue(row, info)
    np.testing.assert_allclose(ex["metadata"], norm[4:], **tol)

    lc = np.unique(_raw_light_curve(row["name"]), axis=0)
    lc = lc[np.argsort(lc[:, 0], kind="stable")]
    t, f, e = lc.T
    mean, mad = f.mean(), _mad(f)
    want = np.stack([(t - t.min()) / (t.max() - t.min()), (f - mean) / mad, e / mad], 1)
    np.testing.assert_allclose(ex["photometry"], want, **tol)
    aux = [*norm[:4], np.log10(mad), (t.max() - t.min()) / 365]
    np.testing.assert_allclose(ex["photometry_aux"], aux, **tol)

    wave, flux, ivar = _raw_spectrum(
        os.path.join(DUMMY, "spectra", row["target"], row["spec_filename"])
    )
    grid = np.arange(3850, 9000, 2.0)
    fi, ii = np.interp(grid, wave, flux), np.interp(grid, wave, ivar)
    smean, smad = fi.mean(), _mad(fi[fi != 0])
    want = np.stack([(fi - smean) / smad, ii / smad, np.full_like(fi, np.log10(smad))])
    np.testing.assert_allclose(ex["spectra"], want, **tol)

    # raw_* values hold the exact numbers the normalisation used ...
    np.testing.assert_allclose(
        [
            ex["raw_flux_mean"],
            ex["raw_flux_mad"],
            ex["raw_time_min"],
            ex["raw_time_max"],
            ex["raw_spectrum_mean"],
            ex["raw_spectrum_mad"],
        ],
        [mean, mad, t.min(), t.max(), smean, smad],
        rtol=1e-12,
    )
    # ... so undoing it recovers the raw HJD and flux.
    p = ex["photometry"].astype(np.float64)
    hjd = p[:, 0] * (ex["raw_time_max"] - ex["raw_time_min"]) + ex["raw_time_min"]
    np.testing.assert_allclose(hjd, t, rtol=0, atol=1e-3)  # float32 time in [0,1]
    np.testing.assert_allclose(
        p[:, 1] * ex["raw_flux_mad"] + ex["raw_flux_mean"],
        f,
        rtol=1e-5,
        atol=1e-5 * mad,
    )
    np.testing.assert_allclose(p[:, 2] * ex["raw_flux_mad"], e, rtol=1e-5)


def test_labels_are_alphabetical_class_index(built):
    builder, sub, seed = built["sub10_0"]
    for split, stem in SPLIT_STEMS.items():
        exs = examples_by_name(builder, split)
        for row in read_csv_rows(
            os.path.join(DUMMY, "splits", sub, str(seed), f"{stem}.csv")
        ):
            assert int(exs[row["name"]]["label"]) == CLASSES.index(row["target"])


# -------------------------------------------------------------- bad input
def _small_release(tmp_path):
    """dummy_data with splits/sub10/0 cut to 2 objects per split (fast builds)."""
    root = tmp_path / "raw"
    shutil.copytree(DUMMY, root)
    folder = root / "splits" / "sub10" / "0"
    for stem in SPLIT_STEMS.values():
        path = folder / f"{stem}.csv"
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, list(reader)[:2]
        write_csv(path, fields, rows)
    return root, folder


def _corrupt(case, root, folder, row):
    """Applies one corruption to object `row`; returns the file the error names."""
    spec = root / "spectra" / row["target"] / row["spec_filename"]
    if case == "corrupt_fits":
        spec.write_bytes(b"SIMPLE  = this is not a FITS file" * 10)
        return row["spec_filename"]
    if case == "missing_fits":
        spec.unlink()
        return row["spec_filename"]
    if case == "dat_removed":
        rewrite_dat(root, row["name"], None)
        return "photometry.zip"
    if case == "one_point":
        rewrite_dat(
            root, row["name"], ASASSN_DAT_HEADER + "2457000.1 12.0 0.01 5.0 0.1\n"
        )
        return f"{row['name']}.dat"
    if case == "constant_flux":
        lines = "".join(f"{2457000 + i} 12.0 0.01 5.0 0.1\n" for i in range(30))
        rewrite_dat(root, row["name"], ASASSN_DAT_HEADER + lines)
        return f"{row['name']}.dat"
    if case == "nan_catalogue":
        edit_first_train_row(folder, ruwe="nan")
        return "train.csv"
    if case == "unknown_class":
        edit_first_train_row(folder, target="CEP")
        return "train.csv"
    raise ValueError(case)


CASES = ["corrupt_fits", "missing_fits", "dat_removed", "one_point",
         "constant_flux", "nan_catalogue", "unknown_class"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_object_strict_and_skipped(tmp_path, case):
    root, folder = _small_release(tmp_path)
    row = read_csv_rows(folder / "train.csv")[0]
    file = _corrupt(case, root, folder, row)

    with pytest.raises(Exception) as err:
        prepare_in_process("sub10_0", tmp_path / "strict", root)
    msg = str(err.value)
    assert row["name"] in msg and file in msg, msg

    # 1 of the 2 train objects is bad: allow half of a split to be skipped.
    builder = prepare_in_process(
        "sub10_0", tmp_path / "skip", root, skip_bad=True, max_bad_fraction=0.5
    )
    names = set(examples_by_name(builder, "train"))
    assert row["name"] not in names and len(names) == 1
    rep_path = os.path.join(builder.data_dir, astrom3.REPORT_NAME)
    rep = json.load(open(rep_path))
    assert rep["skipped"]["train"] == 1 and rep["written"]["train"] == 1
    (bad,) = rep["bad_objects"]["train"]
    assert bad["name"] == row["name"] and file in bad["file"] and bad["problem"]


def test_csv_missing_column_is_fatal_even_with_skip_bad(tmp_path):
    root, folder = _small_release(tmp_path)
    path = folder / "train.csv"
    rows = read_csv_rows(path)
    fields = [c for c in rows[0] if c != "ruwe"]
    write_csv(path, fields, [{c: r[c] for c in fields} for r in rows])
    with pytest.raises(Exception) as err:
        prepare_in_process("sub10_0", tmp_path / "skip", root, skip_bad=True)
    assert "train.csv" in str(err.value) and "ruwe" in str(err.value)


def test_build_spilling_its_shuffle_buffer_to_disk_writes_the_same_records(
    built, tmp_path, monkeypatch
):
    """With the writer's memory buffer smaller than one example, every
    example goes through TFDS's temporary bucket files: the records and their
    order must be those of the in-memory build, and the buffer size must be
    put back after the build."""
    from tensorflow_datasets.core import shuffle

    from astrom3_jax.data.astrom3_tfds import shuffle_buffer

    before = shuffle.MAX_MEM_BUFFER_SIZE, shuffle._Bucket
    monkeypatch.setattr(astrom3, "SHUFFLE_BUFFER_BYTES", 1)
    monkeypatch.setattr(shuffle_buffer, "BUCKET_BUFFER_BYTES", 100)  # appends too
    spilled_keys = []
    add = shuffle_buffer.FileBucket.add
    monkeypatch.setattr(
        shuffle_buffer.FileBucket,
        "add",
        lambda self, key, data: spilled_keys.append(key) or add(self, key, data),
    )
    spilled = build.prepare("full_42", str(tmp_path), DUMMY, num_workers=0)
    assert (shuffle.MAX_MEM_BUFFER_SIZE, shuffle._Bucket) == before
    assert len(spilled_keys) == sum(
        s.num_examples for s in spilled.info.splits.values()
    )
    buckets = [f for f in os.listdir(spilled.data_dir) if f.endswith(".tmp")]
    assert not buckets  # TFDS removed its temporary files
    for split in SPLIT_STEMS:
        ours = split_records(spilled.data_dir, split)
        assert len(ours) == spilled.info.splits[split].num_examples > 0
        assert ours == split_records(built["full_42"][0].data_dir, split), split
