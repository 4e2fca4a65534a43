"""Mislabel hunting: objects far from the centroid of their labelled class.

    python -m astrom3_jax.analysis.mislabels --embeddings EXPORT --out OUT \\
        [--splits train val test] [--k 50] [--method centroid|knn] \\
        [--neighbours 10]

writes OUT/mislabels.csv (ranked by the fused score) and OUT/mislabels.json.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from astrom3_jax.analysis import _common, similarity, store

DEFAULT_K = 50  # the top-k cut of the ranking
METHODS = ("centroid", "knn")
DEFAULT_NEIGHBOURS = 10  # k of the knn method


def centroid_distance(
    train_x: np.ndarray,
    train_y: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    in_train: bool | np.ndarray = False,
) -> np.ndarray:
    """1 - cosine(x_i, centroid of class y_i over the train rows).

    AstroM3's mislabel score: the top of the ranking is rich in mislabelled
    stars (Rizhko & Bloom 2024, arXiv:2411.08842). It ranks a whole split
    (the default, `--method centroid`) and is continuous, so the ranking and
    its precision/recall at k have no ties to break.

    Rows must be unit vectors. Where `in_train` is true, x_i is itself one of
    the train rows and is left out of its centroid. NaN where the class has
    no (other) train member or its centroid is the zero vector.
    """
    n_classes = int(max(train_y.max(initial=-1), y.max(initial=-1))) + 1
    sums = np.zeros((n_classes, train_x.shape[1]))
    np.add.at(sums, train_y, train_x)
    counts = np.bincount(train_y, minlength=n_classes)
    in_train = np.broadcast_to(np.asarray(in_train, bool), (len(x),))
    centroid = sums[y] - np.where(in_train[:, None], x, 0.0)
    members = counts[y] - in_train
    norm = np.linalg.norm(centroid, axis=1)
    valid = (members > 0) & (norm > 1e-12)
    cos = np.einsum("ij,ij->i", x, centroid) / np.where(valid, norm, 1.0)
    return np.where(valid, 1.0 - cos, np.nan)


def knn_disagreement(
    train_y: np.ndarray, neighbours: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """1 - the share of each row's nearest train rows whose class is y_i.

    `--method knn`, and predict's per-star `mislabel_score`: it uses the
    neighbours predict lists and follows a class made of several clumps
    (Mira carbon and oxygen, dwarf and giant rotators), but has only k + 1
    values, so it ties.

    `neighbours` (N, k) indexes the train rows (-1: no neighbour there).
    NaN where a row has no neighbours or no label (y_i < 0).
    """
    valid = neighbours >= 0
    same = valid & (train_y[np.where(valid, neighbours, 0)] == y[:, None])
    n = valid.sum(axis=1)
    share = same.sum(axis=1) / np.maximum(n, 1)
    return np.where((n > 0) & (y >= 0), 1.0 - share, np.nan)


def knn_disagreement_of(
    train_x: np.ndarray,
    train_y: np.ndarray,
    x: np.ndarray | None,
    y: np.ndarray | None,
    k: int = DEFAULT_NEIGHBOURS,
) -> np.ndarray:
    """`knn_disagreement` against the k most cosine-similar train rows (unit
    rows); x=None scores the train rows, each without itself."""
    if x is None:
        x, y, exclude = train_x, train_y, np.arange(len(train_x))
        idx, _ = similarity.top_k_neighbours(x, train_x, k, exclude=exclude)
    else:
        idx, _ = similarity.top_k_neighbours(x, train_x, k)
    return knn_disagreement(train_y, idx, y)


def precision_recall_at_k(
    scores: np.ndarray, positives: np.ndarray, k: int
) -> dict[str, float]:
    """Precision and recall of the k highest scores against boolean positives."""
    top = _common.descending_ranks(scores) <= k
    found = int(np.sum(top & positives))
    n_pos = int(np.sum(positives))
    return {
        "precision": found / max(int(top.sum()), 1),
        "recall": found / n_pos if n_pos else float("nan"),
    }


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the precision-recall curve of the ranking (scikit-learn)."""
    if not positives.any() or positives.all():
        return float("nan")
    metrics = _common.require("sklearn.metrics", "mislabel scoring")
    ok = ~np.isnan(scores)
    return float(metrics.average_precision_score(positives[ok], scores[ok]))


def score_splits(
    train: store.Split,
    others: Sequence[store.Split] = (),
    *,
    method: str = "centroid",
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> dict[str, np.ndarray]:
    """Scores of `method` (METHODS) for train (left-one-out) then each other
    split, in order, per embedding: {embedding: (N_total,) scores}.

    Centroids come from the train split; a train object is left out of its
    own class's centroid, so it cannot pull the centroid towards itself.
    Objects flagged by several modalities at once are the strongest
    candidates (`rank_table`'s n_modalities_top_k).
    """
    if method not in METHODS:
        raise ValueError(f"unknown mislabel method {method!r}; known: {METHODS}")
    train_units = _common.unit_embeddings(train)
    out = {}
    for key, tx in train_units.items():
        ty = train.labels
        if method == "knn":
            parts = [knn_disagreement_of(tx, ty, None, None, neighbours)]
            parts += [
                knn_disagreement_of(tx, ty, s.unit(key), s.labels, neighbours)
                for s in others
            ]
        else:
            parts = [centroid_distance(tx, ty, tx, ty, in_train=True)]
            parts += [centroid_distance(tx, ty, s.unit(key), s.labels) for s in others]
        out[key] = np.concatenate(parts)
    return out


def rank_table(
    splits: Sequence[store.Split], scores: dict[str, np.ndarray], k: int
) -> dict[str, np.ndarray]:
    """Columns of the ranked table: object info, score_/rank_ per embedding,
    n_modalities_top_k, sorted by the fused score (most suspicious first)."""
    info = [
        _common.object_columns(s) | {"split": np.full(len(s), s.name)} for s in splits
    ]
    cols = {key: np.concatenate([i[key] for i in info]) for key in info[0]}
    if all(s.has_truth for s in splits):
        cols["planted"] = np.concatenate([s.mislabelled() for s in splits])
    ranks = {key: _common.descending_ranks(v) for key, v in scores.items()}
    for key in scores:
        cols[f"score_{key}"] = scores[key]
        cols[f"rank_{key}"] = ranks[key]
    modalities = [key for key in scores if key != store.FUSED]
    cols["n_modalities_top_k"] = sum((ranks[m] <= k).astype(int) for m in modalities)
    order = np.argsort(ranks[store.FUSED], kind="stable")
    ordered = {"rank": np.arange(1, len(order) + 1)}
    ordered.update({key: np.asarray(v)[order] for key, v in cols.items()})
    return ordered


def evaluate(scores: dict[str, np.ndarray], planted: np.ndarray, k: int) -> dict:
    """Per embedding: precision/recall at k and at k = number planted, and AP.

    `planted` is the ground truth (the synthetic survey's `true_target`
    differing from the label): the planted mislabels.
    """
    n_planted = int(planted.sum())
    out = {}
    for key, s in scores.items():
        at_k = precision_recall_at_k(s, planted, k)
        out[key] = {
            "precision@k": at_k["precision"],
            "recall@k": at_k["recall"],
            "precision@n_planted": precision_recall_at_k(s, planted, n_planted)[
                "precision"
            ]
            if n_planted
            else float("nan"),
            "average_precision": average_precision(s, planted),
        }
    return out


def run(
    export_dir,
    out_dir,
    *,
    splits: Sequence[str] | None = None,
    k: int = DEFAULT_K,
    method: str = "centroid",
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> dict:
    """Writes mislabels.csv and mislabels.json; returns the JSON content."""
    out = pathlib.Path(out_dir)
    train = _common.load(export_dir, "train")
    if splits is None:
        splits = [
            s for s in store.list_splits(export_dir) if s not in ("train", "unseen")
        ]
        splits = ["train", *splits]
    if "train" not in splits:
        raise ValueError("mislabels: the scored splits must include 'train'")
    others = [_common.load(export_dir, s) for s in splits if s != "train"]
    loaded = [train, *others]
    scores = score_splits(train, others, method=method, neighbours=neighbours)
    table = rank_table(loaded, scores, k)
    _common.write_csv(out / "mislabels.csv", table)
    result = {
        "splits": [s.name for s in loaded],
        "k": k,
        "method": method,
        **({"neighbours": neighbours} if method == "knn" else {}),
        "n_scored": int(len(table["id"])),
        "top_ids": table["id"][: min(k, 20)].tolist(),
    }
    if "planted" in table:
        planted = np.concatenate([s.mislabelled() for s in loaded])
        result["n_planted"] = int(planted.sum())
        result["scores"] = evaluate(scores, planted, k)
    _common.write_json(out / "mislabels.json", result)
    return result


def main(argv=None) -> int:
    p = _common.parser(__spec__.name, __doc__.split("\n\n")[0])
    p.add_argument("--splits", nargs="*", default=None, help="default: all labelled")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="top-k cut")
    p.add_argument("--method", choices=METHODS, default="centroid")
    p.add_argument(
        "--neighbours", type=int, default=DEFAULT_NEIGHBOURS, help="k of --method knn"
    )
    args = p.parse_args(argv)
    result = run(
        args.embeddings,
        args.out,
        splits=args.splits,
        k=args.k,
        method=args.method,
        neighbours=args.neighbours,
    )
    print(f"ranked {result['n_scored']} objects of {', '.join(result['splits'])}")
    if "scores" in result:
        rows = [
            (key, v["precision@k"], v["recall@k"], v["average_precision"])
            for key, v in result["scores"].items()
        ]
        print(f"{result['n_planted']} planted mislabels; top k = {result['k']}")
        print(
            _common.markdown_table(["embedding", "P@k", "R@k", "avg precision"], rows)
        )
    print(f"most suspicious (fused): {', '.join(result['top_ids'][:5])}")
    print(f"wrote {args.out}/mislabels.csv and mislabels.json")
    return 0


if __name__ == "__main__":
    sys.exit(_common.entry(main))
