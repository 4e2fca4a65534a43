"""Objects without every modality: the sky preset, its build, bad records.

A tiny sky release (60 complete objects' worth of classes, twice as many
incomplete ones) is generated, built through TFDS and read through the
pipeline; presence is checked per object against the release's CSV rows.
"""

from __future__ import annotations

import csv
import functools
import pathlib

import numpy as np
import pytest

from astrom3_jax.data import datasets, modalities, names, pipeline, schema
from astrom3_jax.data.astrom3_tfds import astrom3_dataset_builder as astrom3
from astrom3_jax.data.astrom3_tfds import objects
from astrom3_jax.data.release_io import ReleaseError
from astrom3_jax.data.synthetic import release, release_files
from tests.helpers.paths import DUMMY
from tests.helpers.release import read_csv_rows

TINY = dict(n_objects=60, n_unseen=3, workers=1)


def _has(row) -> dict[str, bool]:
    return {
        "photometry": True,
        "spectra": bool(row["spec_filename"]),
        "metadata": all(row[c] != "" for c in schema.META_COLS),
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    base = tmp_path_factory.mktemp("sky_raw")
    sky = release.generate_release(base / "sky", preset="sky", seed=3, **TINY)
    small = release.generate_release(base / "small", preset="small", seed=3, **TINY)
    return sky, small


def _files(root) -> dict[str, bytes]:
    root = pathlib.Path(root)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sky_is_small_plus_incomplete_pretraining_objects(raw):
    sky, small = raw
    a, b = _files(sky), _files(small)
    changed = {"photometry.zip"} | {
        f"splits/full/{s}/train.csv" for s in release_files.SPLIT_SEEDS
    }
    # Every file of small is in sky, the same, but the zip and full train CSVs.
    for rel, data in b.items():
        assert rel in a, rel
        assert (a[rel] == data) == (rel not in changed), rel
    extra_spectra = {rel for rel in a if rel not in b}
    assert all(rel.startswith("spectra/") for rel in extra_spectra)

    for seed in release_files.SPLIT_SEEDS:
        folder = f"splits/full/{seed}"
        small_rows = read_csv_rows(small / folder / "train.csv")
        sky_rows = read_csv_rows(sky / folder / "train.csv")
        assert sky_rows[: len(small_rows)] == small_rows
        extra = sky_rows[len(small_rows) :]
        known = sum(1 for _ in read_csv_rows(small / folder / "train.csv")) + sum(
            len(read_csv_rows(small / folder / f"{s}.csv")) for s in ("val", "test")
        )
        assert len(extra) == 2 * known
        kinds = [_has(r) for r in extra]
        # Incomplete: each lacks a spectrum or catalogue values, never both kept.
        assert not any(k["spectra"] and k["metadata"] for k in kinds)
        n = len(extra)
        mix = release.INCOMPLETE_MIX
        assert sum(k["spectra"] for k in kinds) == round(mix["spectra"] * n)
        assert sum(not (k["spectra"] or k["metadata"]) for k in kinds) == round(
            mix["neither"] * n
        )
        for r in extra:  # absent metadata: all 34 cells blank, photo cells kept
            cells = [r[c] for c in schema.META_COLS]
            assert all(cells) or not any(cells)
            assert all(r[c] for c in schema.PHOTO_COLS)
            spec = sky / "spectra" / r["target"] / r["spec_filename"]
            assert spec.is_file() == bool(r["spec_filename"])
    names_all = [
        r["name"] for p in sky.glob("splits/full/42/*.csv") for r in read_csv_rows(p)
    ]
    assert len(names_all) == len(set(names_all))
    # Labelled evaluation and fine-tuning sets: complete, and small's.
    for sub in ("sub10", "sub25", "sub50"):
        for stem in ("train", "val", "test"):
            assert all(
                all(_has(r).values())
                for r in read_csv_rows(sky / f"splits/{sub}/42/{stem}.csv")
            )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    from astrom3_jax.data import synthetic

    mp.setattr(
        synthetic,
        "generate_release",
        functools.partial(synthetic.generate_release, **TINY),
    )
    data_dir = tmp_path_factory.mktemp("sky_tfds")
    try:
        sky = datasets.prepare("synthetic_sky", str(data_dir), num_workers=0)
        sub10 = datasets.prepare("synthetic_sky_sub10_42", str(data_dir), num_workers=0)
    finally:
        mp.undo()
    root = next(pathlib.Path(data_dir, "downloads").glob("synthetic_sky_seed0_v*"))
    return sky, sub10, root


def test_names_and_configs():
    assert names.optional_modalities("synthetic_sky") == ("spectra", "metadata")
    assert names.optional_modalities("synthetic_bigsky_sub10_0") == (
        "spectra",
        "metadata",
    )
    assert names.optional_modalities("synthetic_small") == ()
    assert names.optional_modalities("full_42") == ()
    cfg = astrom3.Builder.builder_configs["synthetic_sky_sub25_12"]
    assert cfg.optional_modalities == ("spectra", "metadata")
    assert astrom3.Builder.builder_configs["full_42"].optional_modalities == ()


def test_built_presence_per_object(built):
    sky, sub10, root = built
    features = sky.info.features
    assert features["spectra"].shape == (None, 3, schema.SPECTRUM_LENGTH)
    assert features["metadata"].shape == (None, len(schema.META_COLS))
    assert features["raw_spectrum_mad"].shape == (None,)
    assert features["photometry_aux"].shape == (6,)  # every star has a light curve
    stems = {"train": "train", "validation": "val", "test": "test"}
    report = datasets.report(sky)
    for split, stem in stems.items():
        rows = {
            r["name"]: r for r in read_csv_rows(root / "splits/full/42" / f"{stem}.csv")
        }
        ds = sky.as_data_source(split)
        assert len(ds) == len(rows)
        n_absent = dict.fromkeys(("spectra", "metadata"), 0)
        for i in range(len(ds)):
            ex = ds[i]
            has = _has(rows[ex["name"].decode()])
            assert len(ex["spectra"]) == has["spectra"]
            assert len(ex["raw_spectrum_mean"]) == has["spectra"]
            assert len(ex["metadata"]) == has["metadata"]
            assert (
                ex["spec_filename"].decode()
                == rows[ex["name"].decode()]["spec_filename"]
            )
            meta_raw = ex["raw_catalogue"][len(schema.PHOTO_COLS) :]
            assert np.isfinite(meta_raw).all() == has["metadata"]
            assert np.isnan(meta_raw).all() == (not has["metadata"])
            for m in n_absent:
                n_absent[m] += not has[m]
        assert report["absent"][split] == n_absent
        if split != "train":
            assert n_absent == {"spectra": 0, "metadata": 0}
    assert sum(report["absent"]["train"].values()) > 0
    for split in ("train", "validation", "test"):
        ds = sub10.as_data_source(split)
        assert all(len(ds[i]["spectra"]) == len(ds[i]["metadata"]) == 1 for i in
                   range(len(ds)))  # fmt: skip


def test_built_batches_carry_presence(built):
    sky, _, root = built
    rows = {r["id"]: r for r in read_csv_rows(root / "splits/full/42/train.csv")}
    source = sky.as_data_source("train")
    kw = dict(batch_size=32, extra_fields=("id",))
    for cache in (False, True):
        seen = 0
        for b in pipeline.make_eval_batches(source, cache=cache, **kw):
            real = b["mask"] == 1
            # Flags for what objects may lack; every star has a light curve.
            flags = {k for k in b if modalities.is_presence_key(k)}
            assert flags == {"spectra_present", "metadata_present"}
            for r in np.flatnonzero(real):
                has = _has(rows[b["id"][r].decode()])
                assert has["photometry"]
                for m in ("spectra", "metadata"):
                    assert b[modalities.presence_key(m)][r] == float(has[m]), m
                    if not has[m]:
                        np.testing.assert_array_equal(b[m][r], 0)
                seen += 1
            for m in ("spectra", "metadata"):
                np.testing.assert_array_equal(b[modalities.presence_key(m)][~real], 0)
        assert seen == len(rows)
    batch = next(pipeline.make_train_loader(source, batch_size=32, seed=0))
    assert batch["spectra_present"].mean() < 1


# ------------------------------------------------------------- bad records
def _corrupt_spectrum(root):
    rows = read_csv_rows(root / "splits/full/42/train.csv")
    row = next(r for r in rows[::-1] if r["spec_filename"])  # an incomplete one
    path = root / "spectra" / row["target"] / row["spec_filename"]
    path.write_bytes(b"SIMPLE  = not a FITS file" * 20)
    return row, row["spec_filename"]


def _partial_metadata(root):
    path = root / "splits/full/42/train.csv"
    rows = read_csv_rows(path)
    row = next(r for r in rows if all(r[c] for c in schema.META_COLS))
    row["parallax"] = ""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return row, "train.csv"


@pytest.mark.parametrize("corrupt", [_corrupt_spectrum, _partial_metadata])
def test_bad_record_is_still_an_error(tmp_path, monkeypatch, corrupt):
    from astrom3_jax.data import synthetic

    tiny = functools.partial(synthetic.generate_release, **TINY)
    seen = {}

    def generate_and_corrupt(root, **kw):
        out = tiny(root, **kw)
        seen["row"], seen["file"] = corrupt(pathlib.Path(out))
        return out

    monkeypatch.setattr(synthetic, "generate_release", generate_and_corrupt)
    with pytest.raises(ReleaseError) as err:
        datasets.prepare("synthetic_sky", str(tmp_path), num_workers=0)
    msg = str(err.value)
    assert seen["row"]["name"] in msg and seen["file"] in msg, msg
    if corrupt is _partial_metadata:
        assert "parallax" in msg and "all 34 metadata cells blank" in msg, msg
    else:
        assert "unreadable FITS" in msg, msg


def _dummy_row():
    root = pathlib.Path(DUMMY)
    folder = root / "splits/full/42"
    info = __import__("json").loads((folder / "info.json").read_text())
    row = read_csv_rows(folder / "train.csv")[0]
    for c in schema.ALL_COLS:
        row[c] = float(row[c])
    files = objects.ReleaseFiles(
        photometry_zip=str(root / "photometry.zip"),
        info_json=str(folder / "info.json"),
        split_csvs={},
        spectra_root=str(root / "spectra"),
    )
    return row, files, info


@pytest.mark.parametrize("optional", [(), ("spectra", "metadata")])
def test_absent_is_not_bad_only_where_optional(optional):
    import zipfile

    row, files, info = _dummy_row()
    ctx = objects.Context(
        files=files, info=info, csv_path="train.csv", optional=optional
    )
    archive = zipfile.ZipFile(files.photometry_zip)
    full = objects.process_row(row, ctx, archive)
    lacking = {**row, "spec_filename": ""}
    lacking.update(dict.fromkeys(schema.META_COLS, float("nan")))
    if not optional:
        assert full["spectra"].shape == (3, schema.SPECTRUM_LENGTH)
        with pytest.raises(ReleaseError, match="blank spec_filename"):
            objects.process_row(lacking, ctx, archive)
        with pytest.raises(ReleaseError, match="non-finite catalogue value"):
            objects.process_row({**lacking, "spec_filename": "x"}, ctx, archive)
        return
    assert full["spectra"].shape == (1, 3, schema.SPECTRUM_LENGTH)
    assert full["metadata"].shape == (1, len(schema.META_COLS))
    ex = objects.process_row(lacking, ctx, archive)
    assert ex["spectra"].shape == (0, 3, schema.SPECTRUM_LENGTH)
    assert ex["raw_spectrum_mean"].shape == (0,)
    assert ex["metadata"].shape == (0, len(schema.META_COLS))
    assert ex["spec_filename"] == ""
    np.testing.assert_array_equal(ex["photometry"], full["photometry"])
    np.testing.assert_array_equal(ex["photometry_aux"], full["photometry_aux"])


def test_store_optional():
    example = {
        "id": "1",
        "photometry": np.ones((5, 3), np.float32),
        "photometry_aux": np.ones(6, np.float32),
        "metadata": np.ones(34, np.float32),
    }
    inputs = ("id", "photometry", "photometry_aux", "spectra", "metadata")
    stored = objects.store_optional(
        example, ("photometry", "spectra", "metadata"), stored=inputs
    )
    assert stored["photometry"].shape == (5, 3)
    assert stored["photometry_aux"].shape == (1, 6)
    assert stored["metadata"].shape == (1, 34)
    assert stored["spectra"].shape == (0, 3, schema.SPECTRUM_LENGTH)
    assert stored["spectra"].dtype == np.float32
    no_lc = {"id": "2", "spectra": np.ones((3, schema.SPECTRUM_LENGTH))}
    stored = objects.store_optional(no_lc, ("photometry",), stored=inputs)
    assert stored["photometry"].shape == (0, 3)
    assert stored["photometry_aux"].shape == (0, 6)
    assert "raw_flux_mean" not in stored  # not a field of this data set
    with pytest.raises(ValueError, match="spectra is half present: no raw_"):
        objects.store_optional(no_lc, ("spectra",))
    with pytest.raises(ValueError, match="cannot be optional"):
        objects.store_optional(example, ("radio",))
    features = astrom3.model_input_features(("photometry",))
    assert features["photometry_aux"].shape == (None, 6)
    assert features["spectra"].shape == (3, schema.SPECTRUM_LENGTH)
