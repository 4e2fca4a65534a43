"""How much class information each modality of a synthetic release carries.

Hand-made features per modality, a random forest, 5-fold stratified
cross-validation over train+val+test of splits/full/42, class-averaged
(balanced) accuracy. Real-data targets (published AstroM3 models): photometry
~85-90 %, metadata ~80 %, spectra ~60-70 %, all three ~93 %.

    python benchmarks/synthetic_realism.py [--release DIR] [--preset small] [--seed 0]
    python benchmarks/synthetic_realism.py --n_objects 60 --n_estimators 10  # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import pathlib
import shutil
import tempfile
import time
import zipfile

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from astrom3_jax.data import preprocessing, release_io
from astrom3_jax.data.synthetic import release, release_files

GRID = np.arange(3850, 9000, 2.0)
LINES = {  # (centre, half-width) in vacuum A
    "Ha": (6564.6, 6), "Hb": (4862.7, 6), "Hg": (4341.7, 5), "Hd": (4102.9, 5),
    "CaK": (3934.8, 4), "CaH": (3969.6, 4), "Gband": (4305, 8), "Mgb": (5175, 8),
    "NaD": (5894, 5), "CaT2": (8544, 4), "CaT3": (8664, 4), "Na8190": (8190, 6),
    "TiO7054": (7080, 20), "TiO6159": (6185, 20), "C2_5165": (5140, 20),
}  # fmt: skip


def read_rows(root, sub="full", seed=42):
    rows = []
    for split in ("train", "val", "test"):
        with open(
            pathlib.Path(root) / "splits" / sub / str(seed) / f"{split}.csv"
        ) as f:
            rows += list(csv.DictReader(f))
    return rows


def photometry_features(zf, row):
    """Catalogue photo columns + shape statistics of the curve folded at the period."""
    lc = release_io.read_light_curve(zf, row["name"])
    t, flux = lc[:, 0], lc[:, 1]
    mad = np.median(np.abs(flux - np.median(flux))) + 1e-9
    y = (flux - flux.mean()) / mad
    period = float(row["period"])
    ph = 2 * np.pi * ((t - t.min()) / period % 1.0)
    design = np.column_stack(
        [np.ones_like(ph)] + [f(k * ph) for k in (1, 2, 3) for f in (np.sin, np.cos)]
    )
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    amps = np.hypot(coef[1::2], coef[2::2]) + 1e-9
    phases = np.arctan2(coef[2::2], coef[1::2])
    resid = np.std(y - design @ coef) / (np.std(y) + 1e-9)
    phi21 = phases[1] - 2 * phases[0]
    phi31 = phases[2] - 3 * phases[0]
    skew = np.mean(((y - y.mean()) / (y.std() + 1e-9)) ** 3)
    kurt = np.mean(((y - y.mean()) / (y.std() + 1e-9)) ** 4)
    return [
        np.log10(period), float(row["amplitude"]), float(row["lksl_statistic"]),
        float(row["rfr_score"]), np.log10(mad), amps[1] / amps[0], amps[2] / amps[0],
        np.sin(phi21), np.cos(phi21), np.sin(phi31), np.cos(phi31), resid, skew, kurt,
        (t.max() - t.min()) / 365.0,
    ]  # fmt: skip


def read_spectrum(path):
    """(wavelength, flux) through the release reader (both LAMOST layouts)."""
    spec = release_io.read_spectrum(path)
    return spec[:, 0], spec[:, 1]


def spectra_features(root, row):
    """Continuum shape in 40 bands + depths of the classic lines and bands."""
    wave, flux = read_spectrum(
        pathlib.Path(root) / "spectra" / row["target"] / row["spec_filename"]
    )
    f = np.interp(GRID, wave, flux)
    f = f / (np.median(f[(GRID > 6000) & (GRID < 8000)]) + 1e-9)
    bands = [np.median(b) for b in np.array_split(f, 40)]
    depths = []
    for centre, hw in LINES.values():
        core = np.median(f[np.abs(GRID - centre) < hw])
        side = np.median(
            f[(np.abs(GRID - centre) > 2 * hw) & (np.abs(GRID - centre) < 4 * hw)]
        )
        depths.append(1 - core / (side + 1e-9))
    return bands + depths


def metadata_features(rows):
    table = {c: np.array([float(r[c]) for r in rows]) for c in release_files.ALL_COLS}
    tr = preprocessing.transform_catalogue(table, release_files.METADATA_FUNC)
    return np.stack([tr[c] for c in release_files.META_COLS], axis=1)


def score(x, y, seed=0, n_estimators=300):
    clf = RandomForestClassifier(
        n_estimators=n_estimators,
        min_samples_leaf=2,
        class_weight="balanced",
        n_jobs=2,
        random_state=seed,
    )
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    pred = cross_val_predict(clf, np.nan_to_num(x), y, cv=cv)
    recall = {c: float(np.mean(pred[y == c] == c)) for c in sorted(set(y))}
    return balanced_accuracy_score(y, pred), float(np.mean(pred == y)), recall


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--release", default=None, help="existing release (else generate)"
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--n_objects", type=int, default=None, help="generate this many (tests)"
    )
    parser.add_argument("--n_estimators", type=int, default=300, help="trees")
    args = parser.parse_args()
    with release_root(
        args.release, preset=args.preset, seed=args.seed, n_objects=args.n_objects
    ) as root:
        report(root, args.n_estimators)


@contextlib.contextmanager
def release_root(path, **generate):
    """`path`, or a release generated with `generate` into a temporary
    folder that is removed afterwards."""
    if path is not None:
        yield path
        return
    root = tempfile.mkdtemp(prefix="astrom3_synth_")
    try:
        start = time.perf_counter()
        release.generate_release(root, **generate)
        print(f"generated in {time.perf_counter() - start:.1f} s: {root}")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(root, n_estimators=300):
    rows = read_rows(root)
    y = np.array([r["target"] for r in rows])
    with zipfile.ZipFile(pathlib.Path(root) / "photometry.zip") as zf:
        x_p = np.array([photometry_features(zf, r) for r in rows])
    x_s = np.array([spectra_features(root, r) for r in rows])
    x_m = metadata_features(rows)
    print(f"{len(rows)} objects, {len(set(y))} classes; balanced accuracy (accuracy)")
    for name, x in (("photometry", x_p), ("metadata", x_m), ("spectra", x_s),
                    ("all", np.concatenate([x_p, x_m, x_s], axis=1))):  # fmt: skip
        bal, acc, recall = score(x, y, n_estimators=n_estimators)
        per = " ".join(f"{c}:{100 * v:.0f}" for c, v in recall.items())
        print(f"  {name:<11s} {100 * bal:5.1f} %  ({100 * acc:5.1f} %)   recall {per}")


if __name__ == "__main__":
    main()
