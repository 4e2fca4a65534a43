"""The release's written files: split tables, info.json and the light-curve zip.

Values are written at a fixed precision and zip members with a fixed
timestamp, so a release is byte-identical on every x86 CPU and every run.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
import zipfile

import numpy as np

from astrom3_jax.data import preprocessing, schema
from astrom3_jax.data.synthetic import classes

PHOTO_COLS = list(schema.PHOTO_COLS)
META_COLS = list(schema.META_COLS)
ALL_COLS = PHOTO_COLS + META_COLS
METADATA_FUNC = {k: list(v) for k, v in schema.METADATA_FUNC.items()}
CSV_COLS = list(schema.ID_COLS) + ALL_COLS + list(schema.TRUTH_COLS)
SUBSETS = {"full": 1.0, "sub50": 0.5, "sub25": 0.25, "sub10": 0.1}
SPLIT_SEEDS = schema.SEEDS
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Written precision, in significant digits: catalogue columns as Gaia's
# float32 columns carry them; info.json's statistics well past what
# normalisation needs. NumPy's vectorised exp/log/sin differ in the last bits
# between CPUs (AVX-512 against AVX2 code paths); rounding well above those
# bits makes the written files the same on every x86 CPU.
CATALOGUE_DIGITS = 7
STATS_DIGITS = 10


def significant(value: float, digits: int) -> float:
    """value rounded to `digits` significant decimal digits (exactly, by str)."""
    return float(f"{value:.{digits}g}")


def stream_rng(seed, *purpose: int) -> np.random.Generator:
    """The stream of (seed, purpose...); seed is an int or a tuple of ints."""
    head = list(seed) if isinstance(seed, tuple) else [seed]
    return np.random.default_rng(np.random.SeedSequence([*head, *purpose]))


def split_counts(n_per_class: dict[str, int]) -> dict[str, tuple[int, int, int]]:
    """Per-class (train, val, test) sizes: the published seed-42 fractions."""
    out = {}
    for c, n in n_per_class.items():
        tr, va, te = classes.SPLIT_COUNTS_42[c]
        tot = tr + va + te
        n_tr = int(round(n * tr / tot))
        n_va = int(round(n * va / tot))
        out[c] = (n_tr, n_va, n - n_tr - n_va)
    return out


def subset_cap(sizes: list[int], fraction: float) -> int:
    """Largest per-class cap T with sum(min(n_c, T)) <= fraction * sum(n_c)."""
    budget = fraction * sum(sizes)
    lo, hi = 1, max(sizes)  # at least one object per class (tiny test releases)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(s, mid) for s in sizes) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def make_splits(targets: np.ndarray, release_seed: int) -> dict:
    """{(subset, seed): {'train': idx, 'val': idx, 'test': idx}} over known objects."""
    by_class = {c: np.flatnonzero(targets == c) for c in classes.CLASSES}
    sizes = split_counts({c: len(v) for c, v in by_class.items()})
    out = {}
    for split_seed in SPLIT_SEEDS:
        rng = stream_rng(release_seed, 300, split_seed)
        full = {"train": [], "val": [], "test": []}
        for c in classes.CLASSES:
            idx = rng.permutation(by_class[c])
            n_tr, n_va, _ = sizes[c]
            full["train"].append(idx[:n_tr])
            full["val"].append(idx[n_tr : n_tr + n_va])
            full["test"].append(idx[n_tr + n_va :])
        for sub, frac in SUBSETS.items():
            sub_rng = stream_rng(release_seed, 301, split_seed, int(frac * 100))
            parts = {}
            for split, per_class in full.items():
                cap = subset_cap([len(p) for p in per_class], frac)
                chosen = [sub_rng.permutation(p)[:cap] for p in per_class]
                parts[split] = sub_rng.permutation(np.concatenate(chosen))
            out[(sub, split_seed)] = parts
    return out


def _fmt(v):
    if isinstance(v, float):
        return repr(v)  # shortest exact round trip: CSV == in-memory values
    return str(v)


def write_csv(path, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLS)
    for r in rows:
        writer.writerow([_fmt(r[c]) for c in CSV_COLS])
    pathlib.Path(path).write_text(buf.getvalue())


def info_json(train_rows) -> dict:
    """info.json: columns, transforms, and train-split mean/std after the transforms."""
    table = {c: np.array([r[c] for r in train_rows], float) for c in ALL_COLS}
    mean, std = preprocessing.catalogue_stats(table, METADATA_FUNC, ALL_COLS)
    return {
        "classes": list(classes.CLASSES),
        "meta_cols": META_COLS,
        "photo_cols": PHOTO_COLS,
        "all_cols": ALL_COLS,
        "metadata_func": METADATA_FUNC,
        "mean": [significant(float(x), STATS_DIGITS) for x in mean],
        "std": [significant(float(x), STATS_DIGITS) for x in std],
    }


def write_zip(path, lc_files):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, data in sorted(lc_files):
            info = zipfile.ZipInfo(f"vardb_files/{name}.dat", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def write_splits(root, rows, cat, seed, extra_rows=()):
    """Split folders of the known objects (+ `extra_rows` in every full train)."""
    known = np.flatnonzero(~cat["unseen"])
    unseen_rows = [rows[i] for i in np.flatnonzero(cat["unseen"])]
    splits = make_splits(np.asarray(cat["target"])[known], seed)
    for (sub, split_seed), parts in splits.items():
        folder = pathlib.Path(root) / "splits" / sub / str(split_seed)
        folder.mkdir(parents=True, exist_ok=True)
        for split, idx in parts.items():
            split_rows = [rows[known[i]] for i in idx]
            if split == "train" and sub == "full":
                split_rows += list(extra_rows)
            write_csv(folder / f"{split}.csv", split_rows)
        write_csv(folder / "unseen.csv", unseen_rows)
        info = info_json([rows[known[i]] for i in parts["train"]])
        (folder / "info.json").write_text(json.dumps(info, indent=4))
    return splits
