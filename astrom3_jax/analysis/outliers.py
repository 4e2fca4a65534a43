"""Outlier and unseen-class detection in the embedding space.

    python -m astrom3_jax.analysis.outliers --embeddings EXPORT --out OUT \\
        [--splits test unseen] [--k 10] [--seed 0] \\
        [--methods knn isolation_forest lof]

writes OUT/outliers.csv and OUT/outliers.json.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from astrom3_jax.analysis import _common, similarity, store

METHODS = ("knn", "isolation_forest", "lof")
DEFAULT_METHODS = ("knn", "isolation_forest")
DEFAULT_K = 10


def knn(
    train_x: np.ndarray, x: np.ndarray | None, k: int = DEFAULT_K
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, cosines), each (N, k'), of the k nearest train rows of each
    row of x, and the k-NN outlier score: 1 - the mean of those cosines.

    The one k-NN outlier score of the project: predict's `outlier_score` (a
    star against a reference export) is this function too, placed among the
    reference's own scores by `percentile_among`. It needs no fitted model
    and no scikit-learn, reads as "how far from its nearest known objects"
    for one star as for a whole split, and its neighbours are the ones
    predict lists; the isolation forest and LOF stay here as the fitted
    alternatives, by name.

    Rows must be unit vectors. x=None scores the train rows themselves, each
    without itself; k' = min(k, train rows available). Ties keep train order
    (similarity.top_k_neighbours).
    """
    if x is None:
        exclude = np.arange(len(train_x))
        idx, cos = similarity.top_k_neighbours(train_x, train_x, k, exclude=exclude)
    else:
        idx, cos = similarity.top_k_neighbours(x, train_x, k)
    return idx, cos, 1.0 - cos.mean(axis=1)


def knn_distance(
    train_x: np.ndarray, x: np.ndarray | None, k: int = DEFAULT_K
) -> np.ndarray:
    """The k-NN outlier score of `knn` alone: mean cosine distance to the k
    nearest train rows; x=None scores the train rows, each without itself."""
    return knn(train_x, x, k)[2]


def percentile_among(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """100 x the share of `reference` scores at or below each score (100:
    more unusual than every reference object)."""
    own = np.sort(reference)
    return 100.0 * np.searchsorted(own, scores, "right") / len(own)


def isolation_forest(
    train_x: np.ndarray, x: np.ndarray | None, *, seed: int = 0, n_trees: int = 200
) -> np.ndarray:
    """Isolation-forest anomaly score (negated score_samples) of x, or of the
    train rows when x is None."""
    ensemble = _common.require("sklearn.ensemble", "isolation-forest scores")
    forest = ensemble.IsolationForest(n_estimators=n_trees, random_state=seed)
    forest.fit(train_x)
    return -forest.score_samples(train_x if x is None else x)


def local_outlier_factor(
    train_x: np.ndarray, x: np.ndarray | None, k: int = 20
) -> np.ndarray:
    """Local outlier factor (cosine) of x against the train rows; x=None
    gives the train rows' own factors."""
    neighbors = _common.require("sklearn.neighbors", "local-outlier-factor scores")
    k = min(k, len(train_x) - 1)
    lof = neighbors.LocalOutlierFactor(
        n_neighbors=k, metric="cosine", algorithm="brute", novelty=x is not None
    )
    lof.fit(train_x)
    if x is None:
        return -lof.negative_outlier_factor_
    return -lof.score_samples(x)


def score(
    train: store.Split,
    splits: Sequence[store.Split],
    *,
    k: int = DEFAULT_K,
    seed: int = 0,
    methods: Sequence[str] = DEFAULT_METHODS,
) -> dict[str, dict[str, list[np.ndarray]]]:
    """{embedding: {method: [scores of each split]}}; a split that *is* the
    train split is scored leave-self-out.

    Every score is higher = more unusual, and fitted on the train split:
    `knn` (mean cosine distance to the k nearest train objects), the
    isolation forest and, on request (`lof`: it compares every pair of train
    objects, minutes on a full export), the local outlier factor
    (scikit-learn; AstroM3 uses the latter two, Rizhko & Bloom 2024,
    arXiv:2411.08842).
    """
    out = {}
    for key in _common.embedding_keys(train):
        tx = train.unit(key)
        xs = [None if s is train else s.unit(key) for s in splits]
        out[key] = {}
        for method in methods:
            if method == "knn":
                out[key][method] = [knn_distance(tx, x, k) for x in xs]
            elif method == "isolation_forest":
                out[key][method] = [isolation_forest(tx, x, seed=seed) for x in xs]
            elif method == "lof":
                out[key][method] = [local_outlier_factor(tx, x, 2 * k) for x in xs]
            else:
                raise ValueError(f"unknown outlier method {method!r}")
    return out


def unseen_auc(scores_known: np.ndarray, scores_unseen: np.ndarray) -> float:
    """ROC AUC of telling unseen (positive) from known objects by the score:
    with an `unseen` split (classes outside the ten) against the test split,
    how well each score finds new classes."""
    metrics = _common.require("sklearn.metrics", "unseen-class AUC")
    y = np.r_[np.zeros(len(scores_known)), np.ones(len(scores_unseen))]
    return float(metrics.roc_auc_score(y, np.r_[scores_known, scores_unseen]))


def run(
    export_dir,
    out_dir,
    *,
    splits: Sequence[str] | None = None,
    k: int = DEFAULT_K,
    seed: int = 0,
    methods: Sequence[str] = DEFAULT_METHODS,
) -> dict:
    """Writes outliers.csv and outliers.json; returns the JSON content."""
    out = pathlib.Path(out_dir)
    train = _common.load(export_dir, "train")
    if splits is None:
        present = store.list_splits(export_dir)
        splits = [s for s in ("test", "unseen") if s in present]
    loaded = [train if s == "train" else _common.load(export_dir, s) for s in splits]
    scores = score(train, loaded, k=k, seed=seed, methods=methods)
    cols = {"split": np.concatenate([np.full(len(s), s.name) for s in loaded])}
    info = [_common.object_columns(s) for s in loaded]
    cols.update({c: np.concatenate([i[c] for i in info]) for c in info[0]})
    for key, per_method in scores.items():
        for method, parts in per_method.items():
            cols[f"{key}/{method}"] = np.concatenate(parts)
    headline = cols[f"{store.FUSED}/knn"]
    order = np.argsort(-headline, kind="stable")
    cols = {c: np.asarray(v)[order] for c, v in cols.items()}
    _common.write_csv(out / "outliers.csv", cols)
    result = {"splits": list(splits), "k": k, "seed": seed, "methods": list(methods)}
    result["top_ids_fused_knn"] = cols["id"][:20].tolist()
    names = [s.name for s in loaded]
    if "test" in names and "unseen" in names:
        t, u = names.index("test"), names.index("unseen")
        result["unseen_vs_test_auc"] = {
            key: {m: unseen_auc(p[t], p[u]) for m, p in per_method.items()}
            for key, per_method in scores.items()
        }
    _common.write_json(out / "outliers.json", result)
    return result


def main(argv=None) -> int:
    p = _common.parser(__spec__.name, __doc__.split("\n\n")[0])
    p.add_argument("--splits", nargs="*", default=None, help="default: test unseen")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="neighbours (LOF: 2k)")
    p.add_argument("--seed", type=int, default=0, help="isolation-forest seed")
    p.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS)
    )
    args = p.parse_args(argv)
    result = run(
        args.embeddings,
        args.out,
        splits=args.splits,
        k=args.k,
        seed=args.seed,
        methods=args.methods,
    )
    if "unseen_vs_test_auc" in result:
        methods = result["methods"]
        rows = [
            (key, *(v[m] for m in methods))
            for key, v in result["unseen_vs_test_auc"].items()
        ]
        print("ROC AUC, unseen vs test objects")
        print(_common.markdown_table(["embedding", *methods], rows))
    print(f"most unusual (fused k-NN): {', '.join(result['top_ids_fused_knn'][:5])}")
    print(f"wrote {args.out}/outliers.csv and outliers.json")
    return 0


if __name__ == "__main__":
    sys.exit(_common.entry(main))
