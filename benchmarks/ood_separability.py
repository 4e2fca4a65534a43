"""How far the synthetic survey's unseen classes stand out, model aside.

The `unseen` split holds stars of classes outside the ten (classical
Cepheids labelled RRAB, long-secondary-period giants labelled SR,
double-mode RR Lyrae labelled RRC). For several sets of hand-made features
(synthetic_realism.py's) this prints the AUROC of unseen against test
objects for:

- the unsupervised score `predict` uses on the light-curve numbers
  (calibration.InputDensity: nearest per-class Gaussian of the training
  split), here on each feature set;
- a supervised ceiling: a random forest trained to tell unseen from test
  objects, 5-fold cross-validated. An unsupervised score cannot be told
  which stars are strangers, so this bounds what any score on those
  features could reach.

Per unseen class too. The release is generated with --n_unseen out-of-class
stars (the small preset has 19; 300 gives usable per-class figures).

    python benchmarks/ood_separability.py                      # ~2 min
    python benchmarks/ood_separability.py --n_objects 200 --n_unseen 30 \
        --n_estimators 10
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import zipfile

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from synthetic_realism import metadata_features, photometry_features, release_root

from astrom3_jax.training import calibration

# Columns of photometry_features: 0 log10 period, 1 amplitude, 2 LKSL, 3
# rfr_score, 4.. the light curve's shape and baseline.
FEATURE_SETS = {
    "amplitude, log period, LKSL (predict's score)": lambda p, m: p[:, [1, 0, 2]],
    "+ rfr_score": lambda p, m: p[:, [1, 0, 2, 3]],
    "light curve (15 features)": lambda p, m: p,
    "catalogue (34 values)": lambda p, m: m,
    "light curve + catalogue": lambda p, m: np.c_[p, m],
}


def rows_of(root, split, sub="full", seed=42):
    with open(pathlib.Path(root) / "splits" / sub / str(seed) / f"{split}.csv") as f:
        return list(csv.DictReader(f))


def features(root, rows):
    with zipfile.ZipFile(pathlib.Path(root) / "photometry.zip") as zf:
        photo = np.array([photometry_features(zf, r) for r in rows])
    return photo, metadata_features(rows)


def standardise(train, *others):
    mu, sd = np.nanmean(train, 0), np.nanstd(train, 0) + 1e-9
    return [np.nan_to_num((x - mu) / sd) for x in (train, *others)]


def report(root, n_estimators: int, seed: int):
    train, test, unseen = (rows_of(root, s) for s in ("train", "test", "unseen"))
    classes = sorted({r["target"] for r in train})
    y = np.array([classes.index(r["target"]) for r in train])
    kind = np.array([r["true_target"] for r in unseen])
    f_train, f_test, f_unseen = (features(root, r) for r in (train, test, unseen))
    print(
        f"{len(train)} train, {len(test)} test, {len(unseen)} unseen "
        f"({', '.join(f'{k} {np.sum(kind == k)}' for k in sorted(set(kind)))})"
    )
    print("| features | score | AUROC | " + " | ".join(sorted(set(kind))) + " |")
    print("|---|---|---|" + "---|" * len(set(kind)))
    for name, pick in FEATURE_SETS.items():
        a, b, c = standardise(pick(*f_train), pick(*f_test), pick(*f_unseen))
        density = calibration.InputDensity.fit(
            a, y, len(classes), channels=range(a.shape[1])
        )
        x = np.r_[b, c]
        is_unseen = np.r_[np.zeros(len(b)), np.ones(len(c))]
        forest = RandomForestClassifier(
            n_estimators, min_samples_leaf=2, n_jobs=2, random_state=seed
        )
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        supervised = cross_val_predict(
            forest, x, is_unseen, cv=cv, method="predict_proba"
        )[:, 1]
        scores = {
            "nearest-class Gaussian": density.score(x),
            "supervised forest (ceiling)": supervised,
        }
        for label, s in scores.items():
            neg, pos = s[: len(b)], s[len(b) :]
            per = " | ".join(
                f"{calibration.auroc(neg, pos[kind == k]):.3f}"
                for k in sorted(set(kind))
            )
            print(f"| {name} | {label} | {calibration.auroc(neg, pos):.3f} | {per} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", help="existing release (else generate)")
    parser.add_argument("--seed", type=int, default=0, help="release seed")
    parser.add_argument("--n_objects", type=int, default=None)
    parser.add_argument("--n_unseen", type=int, default=300)
    parser.add_argument("--n_estimators", type=int, default=300)
    args = parser.parse_args()
    with release_root(
        args.release,
        preset="small",
        seed=args.seed,
        n_objects=args.n_objects,
        n_unseen=args.n_unseen,
    ) as root:
        report(root, args.n_estimators, args.seed)


if __name__ == "__main__":
    main()
