"""How much class information `rfr_score` adds to the other catalogue numbers.

A star outside ASAS-SN's variable-star catalogue has no `rfr_score` (the
catalogue's random-forest score) and `predict` gives it the training mean.
This measures what that costs, model aside: random forests trained on the
train split's catalogue numbers (amplitude, log period, LKSL) with and
without `rfr_score`, scored on the test split (mean of three forest seeds).

    python benchmarks/rfr_signal.py \
        --release ~/tensorflow_datasets/downloads/synthetic_full_seed0_v3
    python benchmarks/rfr_signal.py --n_objects 300 --n_estimators 10   # seconds
"""

from __future__ import annotations

import argparse

import numpy as np
from ood_separability import rows_of
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from synthetic_realism import release_root

FEATURE_SETS = {
    "amplitude, log period, LKSL, rfr_score": [0, 1, 2, 3],
    "amplitude, log period, LKSL": [0, 1, 2],
    "rfr_score alone": [3],
}


def numbers(rows):
    """(N, 4) amplitude, log10 period, LKSL, rfr_score; (N,) catalogue class."""
    x = np.array(
        [
            [
                float(r["amplitude"]),
                np.log10(float(r["period"])),
                float(r["lksl_statistic"]),
                float(r["rfr_score"]),
            ]
            for r in rows
        ]
    )
    return x, np.array([r["target"] for r in rows])


def report(root, split_seed: int, n_estimators: int):
    (x_train, y_train), (x_test, y_test) = (
        numbers(rows_of(root, s, seed=split_seed)) for s in ("train", "test")
    )
    print(f"{len(y_train)} train, {len(y_test)} test objects (split seed {split_seed})")
    print("| catalogue numbers | accuracy | balanced accuracy |\n|---|---|---|")
    for name, cols in FEATURE_SETS.items():
        got = []
        for seed in (0, 1, 2):
            forest = RandomForestClassifier(
                n_estimators, min_samples_leaf=2, random_state=seed, n_jobs=1
            ).fit(x_train[:, cols], y_train)
            pred = forest.predict(x_test[:, cols])
            got.append(
                (accuracy_score(y_test, pred), balanced_accuracy_score(y_test, pred))
            )
        acc, bal = 100 * np.mean(got, axis=0)
        print(f"| {name} | {acc:.2f} | {bal:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", help="existing release (else generate)")
    parser.add_argument("--seed", type=int, default=0, help="release seed")
    parser.add_argument("--split_seed", type=int, default=42)
    parser.add_argument("--n_objects", type=int, default=None)
    parser.add_argument("--n_estimators", type=int, default=300)
    args = parser.parse_args()
    with release_root(
        args.release, preset="small", seed=args.seed, n_objects=args.n_objects
    ) as root:
        report(root, args.split_seed, args.n_estimators)


if __name__ == "__main__":
    main()
