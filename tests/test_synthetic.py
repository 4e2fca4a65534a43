"""Synthetic survey: determinism, Hub release format, ground truth, split logic."""

from __future__ import annotations

import csv
import io
import json
import pathlib
import re
import zipfile

import numpy as np
import pytest
from astropy.io import fits

from astrom3_jax.data import preprocessing, release_io
from astrom3_jax.data.synthetic import (
    catalogue,
    classes,
    release,
    release_files,
    spectra,
)

N_OBJ = 150


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    kw = dict(preset="small", n_objects=N_OBJ, n_unseen=9, workers=1)
    a = release.generate_release(base / "a", seed=3, **kw)
    b = release.generate_release(base / "b", seed=3, **kw)
    c = release.generate_release(base / "c", seed=4, **kw)
    return a, b, c


def _files(root):
    return {p.relative_to(root): p for p in sorted(root.rglob("*")) if p.is_file()}


def _table(root, sub="full", seed=42, split="train"):
    """The rows of a release's splits/<sub>/<seed>/<split>.csv table."""
    with open(root / "splits" / sub / str(seed) / f"{split}.csv") as f:
        return list(csv.DictReader(f))


def test_same_seed_gives_byte_identical_release(releases):
    a, b, _ = releases
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys()
    for rel in fa:
        assert fa[rel].read_bytes() == fb[rel].read_bytes(), rel


def test_other_seed_gives_other_stars(releases):
    a, _, c = releases
    assert (a / "photometry.zip").read_bytes() != (c / "photometry.zip").read_bytes()
    names_a = {r["name"] for r in _table(a)}
    names_c = {r["name"] for r in _table(c)}
    assert len(names_a & names_c) < 3


def test_layout_and_csv_columns(releases):
    root = releases[0]
    for sub in release_files.SUBSETS:
        for seed in release_files.SPLIT_SEEDS:
            folder = root / "splits" / sub / str(seed)
            names = {p.name for p in folder.iterdir()}
            assert names == {
                "train.csv",
                "val.csv",
                "test.csv",
                "unseen.csv",
                "info.json",
            }
            with open(folder / "train.csv") as f:
                header = next(csv.reader(f))
            assert header == release_files.CSV_COLS
    expected_38 = set(release_files.PHOTO_COLS) | set(release_files.META_COLS)
    assert len(expected_38) == 38 and {"l", "b"} <= set(release_files.META_COLS)
    for r in _table(root):
        assert re.fullmatch(r"EDR3 \d{17,19}", r["id"])
        assert " " not in r["name"] and r["name"].startswith("ASASSN-V")
        assert r["target"] in classes.CLASSES
        assert re.fullmatch(
            r"spec-\d{5}-\w+_sp\d\d-\d{3}\.fits(\.gz)?", r["spec_filename"]
        )
        assert all(np.isfinite(float(r[c])) for c in release_files.ALL_COLS)
        assert float(r["period"]) > 0 and 0 <= float(r["rfr_score"]) <= 1


def test_info_json(releases):
    root = releases[0]
    info = json.loads((root / "splits" / "full" / "42" / "info.json").read_text())
    assert info["classes"] == list(classes.CLASSES)
    assert info["all_cols"] == info["photo_cols"] + info["meta_cols"]
    assert len(info["meta_cols"]) == 34 and len(info["photo_cols"]) == 4
    assert set(info["metadata_func"]) == {"abs", "cos", "sin", "log"}
    assert len(info["mean"]) == len(info["std"]) == 38
    assert release_io.read_info(root / "splits" / "full" / "42" / "info.json") == info
    rows = release_io.read_split_csv(root / "splits" / "full" / "42" / "train.csv")
    table = {c: np.array([r[c] for r in rows]) for c in release_files.ALL_COLS}
    tr = preprocessing.transform_catalogue(table, info["metadata_func"])
    plx = np.where(table["parallax"] <= 0, 1, table["parallax"])
    np.testing.assert_allclose(tr["k_mag"], table["k_mag"] - 10 + 5 * np.log10(plx))
    np.testing.assert_allclose(tr["period"], np.log10(table["period"]))
    mat = np.stack([tr[c] for c in release_files.ALL_COLS], axis=1)
    # info.json keeps 10 significant digits (so every CPU writes the same
    # file): the error of that rounding is at most half a unit in the 10th.
    digits_rtol = 0.5 * 10.0 ** (1 - release_files.STATS_DIGITS)
    np.testing.assert_allclose(info["mean"], mat.mean(0), rtol=digits_rtol)
    np.testing.assert_allclose(info["std"], mat.std(0), rtol=digits_rtol)


def test_light_curve_files(releases):
    root = releases[0]
    rows = _table(root) + _table(root, split="unseen")
    with zipfile.ZipFile(root / "photometry.zip") as zf:
        members = set(zf.namelist())
        assert {f"vardb_files/{r['name']}.dat" for r in rows} <= members
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
        for r in rows[:40]:
            lines = zf.read(f"vardb_files/{r['name']}.dat").decode().splitlines()
            data = np.loadtxt(io.StringIO("\n".join(lines[2:])))
            assert data.ndim == 2 and data.shape[1] == 5 and len(data) >= 50
            lc = release_io.read_light_curve(zf, r["name"])
            np.testing.assert_array_equal(lc, data[:, [0, 3, 4]])
            assert np.all(np.diff(lc[:, 0]) > 0) and np.all(lc[:, 2] > 0)


def test_spectra_both_layouts_read_back(releases):
    root = releases[0]
    rows = _table(root) + _table(root, split="val") + _table(root, split="test")
    layouts, gz = set(), set()
    for r in rows:
        path = root / "spectra" / r["target"] / r["spec_filename"]
        with fits.open(path) as hdul:
            layouts.add(len(hdul))
        gz.add(path.name.endswith(".gz"))
        wave, flux, ivar = release_io.read_spectrum(path).T
        assert wave[0] < 3850 and wave[-1] > 9000 and np.all(np.diff(wave) > 0)
        np.testing.assert_allclose(
            wave[:2], 10 ** (3.5682 + 1e-4 * np.arange(2)), rtol=1e-6
        )
        assert np.all(ivar >= 0) and np.mean(ivar > 0) > 0.95
        assert np.all(np.isfinite(flux)) and np.median(flux) > 0
    assert layouts == {1, 2} and gz == {True, False}


def test_ground_truth_and_unseen(releases):
    root = releases[0]
    rows = _table(root) + _table(root, split="val") + _table(root, split="test")
    for r in rows:
        assert r["true_target"] in classes.CLASSES
        if r["true_target"] == "M":
            assert r["subtype"] in ("carbon", "oxygen")
        elif r["true_target"] == "ROT":
            assert r["subtype"] in ("dwarf", "giant")
    unseen = _table(root, split="unseen")
    assert len(unseen) == 9
    for r in unseen:
        assert r["true_target"] in classes.UNSEEN_CLASSES
        assert r["target"] == classes.UNSEEN_LABEL[r["true_target"]]
    assert not {r["name"] for r in unseen} & {r["name"] for r in rows}


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.1])
def test_planted_mislabel_fraction(fraction):
    obj = release.draw_objects("full", seed=1, mislabel_fraction=fraction)
    known = ~obj["unseen"]
    wrong = np.mean(obj["target"][known] != obj["true"][known])
    assert abs(wrong - fraction) < 0.002
    for t, y in zip(obj["target"][known], obj["true"][known], strict=True):
        assert t == y or t in classes.CONFUSIONS[y]


def test_full_size_class_proportions_and_split_sizes():
    obj = release.draw_objects("full", seed=0)
    targets = obj["target"][~obj["unseen"]]
    counts = {c: int(np.sum(targets == c)) for c in classes.CLASSES}
    assert counts == classes.FULL_COUNTS and sum(counts.values()) == 21440
    splits = release_files.make_splits(targets, release_seed=0)
    full = splits[("full", 42)]
    for c, sizes in classes.SPLIT_COUNTS_42.items():
        got = tuple(
            int(np.sum(targets[full[s]] == c)) for s in ("train", "val", "test")
        )
        assert got == sizes
    assert [len(full[s]) for s in ("train", "val", "test")] == [17063, 2152, 2225]
    assert [len(splits[("sub25", 42)][s]) for s in ("train", "val", "test")] == [
        4260,
        532,
        555,
    ]
    assert len(splits[("sub50", 42)]["train"]) == 8526
    assert [len(splits[("sub10", 42)][s]) for s in ("val", "test")] == [210, 220]


def test_split_logic_disjoint_nested_balanced():
    obj = release.draw_objects("small", seed=2)
    targets = obj["target"][~obj["unseen"]]
    splits = release_files.make_splits(targets, release_seed=2)
    assert (
        splits[("full", 42)]["train"].tolist() != splits[("full", 0)]["train"].tolist()
    )
    for (sub, seed), parts in splits.items():
        full = splits[("full", seed)]
        sets = [set(parts[s].tolist()) for s in ("train", "val", "test")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        for s in ("train", "val", "test"):
            assert set(parts[s].tolist()) <= set(full[s].tolist())
            n_c = [int(np.sum(targets[parts[s]] == c)) for c in classes.CLASSES]
            full_c = [int(np.sum(targets[full[s]] == c)) for c in classes.CLASSES]
            cap = max(n_c)
            assert all(n == min(f, cap) for n, f in zip(n_c, full_c, strict=True)), sub


def test_cli_small(tmp_path):
    from astrom3_jax.data.synthetic.__main__ import main

    main(
        [
            "--output",
            str(tmp_path / "r"),
            "--n-objects",
            "60",
            "--seed",
            "5",
            "--workers",
            "1",
        ]
    )
    assert (tmp_path / "r" / "photometry.zip").exists()
    assert (tmp_path / "r" / "splits" / "sub10" / "123" / "info.json").exists()


def test_physics_sanity(releases):
    """Catalogue values follow the class physics (periods, Bailey, colours)."""
    rows = _table(releases[0]) + _table(releases[0], split="val")
    by = {}
    for r in rows:
        if r["target"] == r["true_target"]:
            by.setdefault(r["target"], []).append(r)

    def med(c, col):
        return float(np.median([float(r[col]) for r in by[c]]))

    assert med("DSCT", "period") < med("RRC", "period") < med("RRAB", "period") < 1
    assert med("M", "period") > med("SR", "period") > 10
    assert (
        med("M", "amplitude") > 2 > med("RRAB", "amplitude") > med("DSCT", "amplitude")
    )
    assert (
        med("M", "bp_rp")
        > med("SR", "bp_rp")
        > med("EW", "bp_rp")
        > med("RRC", "bp_rp")
    )
    assert med("M", "w1_w2") > med("EW", "w1_w2")
    assert med("EW", "lksl_statistic") < med("DSCT", "lksl_statistic")


def test_spectrum_flux_follows_observed_v_whatever_the_extinction():
    """Dust dims a spectrum once: v_mean already holds a_v, so at the same
    observed V the flux near 5500 A must not fall with a_v (generator 2
    dimmed it twice, by 10**(-0.4 a_v) more, 0.063x at a_v = 3)."""
    n = 300
    medians = {}
    for a_v in (0.0, 3.0):
        stars = {
            "teff_spec": np.full(n, 6000.0), "logg": np.full(n, 4.0),
            "feh": np.zeros(n), "true_class": np.array(["EW"] * n),
            "rv": np.zeros(n), "a_v": np.full(n, a_v), "vsini": np.full(n, 10.0),
            "subtype": np.array([""] * n), "phase": np.zeros(n),
            "v_mean": np.full(n, 13.0), "r_mag": np.full(n, 12.5),
        }  # fmt: skip
        flux, _, _ = spectra.synthesize(stars, np.random.default_rng(7))
        v_band = (spectra.WAVE > 5400) & (spectra.WAVE < 5600)
        medians[a_v] = float(np.median(flux[:, v_band]))
    # Same seed, so the per-star scatter (response, lognormal scale) is the
    # same draw in both groups; only the dust differs.
    assert medians[3.0] / medians[0.0] == pytest.approx(1.0, rel=0.05)


def test_worker_count_does_not_change_output(releases, tmp_path):
    root = release.generate_release(
        tmp_path / "w2", seed=3, preset="small", n_objects=N_OBJ, n_unseen=9, workers=2
    )
    ref = _files(releases[0])
    got = _files(root)
    assert ref.keys() == got.keys()
    for rel in (
        "photometry.zip",
        "splits/full/42/train.csv",
        "splits/sub10/0/info.json",
    ):
        assert (
            ref[pathlib.Path(rel)].read_bytes() == got[pathlib.Path(rel)].read_bytes()
        )
    spectra = [k for k in ref if k.parts[0] == "spectra"]
    assert all(ref[k].read_bytes() == got[k].read_bytes() for k in spectra)


@pytest.mark.slow
def test_full_preset_on_disk(tmp_path):
    """The full-size release: real class counts and seed-42 split sizes (~3 min)."""
    root = release.generate_release(tmp_path / "full", preset="full", seed=0)
    folder = root / "splits" / "full" / "42"
    sizes = {}
    for split in ("train", "val", "test"):
        for r in release_io.read_split_csv(folder / f"{split}.csv"):
            sizes.setdefault(r["target"], [0, 0, 0])[
                ("train", "val", "test").index(split)
            ] += 1
    assert {c: tuple(v) for c, v in sizes.items()} == classes.SPLIT_COUNTS_42
    with zipfile.ZipFile(root / "photometry.zip") as zf:
        assert len(zf.namelist()) == 21440 + len(_table(root, split="unseen"))


def _assert_curves_have_scatter(root):
    """Every curve must pass the builder's MAD check: no flat (saturated) curves."""
    with zipfile.ZipFile(root / "photometry.zip") as zf:
        names = [n[len("vardb_files/") : -4] for n in zf.namelist()]
        for name in names:
            flux = release_io.read_light_curve(zf, name)[:, 1]
            mad = np.median(np.abs(flux - np.median(flux)))
            assert mad > 0 and len(np.unique(flux)) >= 2, name
    return names


def test_light_curves_never_flat(releases):
    _assert_curves_have_scatter(releases[0])


def test_saturated_stars_keep_scatter(tmp_path, monkeypatch):
    """Stars far above the V ~ 9.8 saturation limit still jitter and vary."""
    place = catalogue.place_stars

    def bright_place(true_class, phys, rng):
        pos = place(true_class, phys, rng)
        pos["v_mean"][::2] = np.linspace(7.5, 10.0, len(pos["v_mean"][::2]))
        return pos

    monkeypatch.setattr(catalogue, "place_stars", bright_place)
    root = release.generate_release(
        tmp_path / "bright", preset="small", seed=5, n_objects=24, n_unseen=2, workers=1
    )
    assert len(_assert_curves_have_scatter(root)) >= 24
    rows = _table(root) + _table(root, split="val") + _table(root, split="test")
    assert min(float(r["mean_vmag"]) for r in rows) < 9.8  # saturated stars present
