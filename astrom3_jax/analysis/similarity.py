"""Similarity search in the shared embedding space, and cross-modal retrieval.

    python -m astrom3_jax.analysis.similarity --embeddings EXPORT --out OUT \\
        [--split test] [--ids ID ...] [--n-queries 5] [--k 10]

writes OUT/neighbours.csv and OUT/retrieval.json.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from astrom3_jax.analysis import _common, store

TIE_TOLERANCE = 1e-6  # cosine differences below this count as ties
_CHUNK = 1024


def top_k_neighbours(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosines), each (Q, k'), of the most similar candidate rows.

    Rows must be unit vectors. `exclude[q]` is a candidate index never
    returned for query q (the query itself), or -1. k' = min(k, candidates
    left); equal similarities keep candidate order.
    """
    n = len(candidates)
    k = min(k, n - (exclude is not None))
    idx = np.empty((len(queries), k), np.int64)
    sims = np.empty((len(queries), k))
    for start in range(0, len(queries), _CHUNK):
        s = _common.cosine_matrix(queries[start : start + _CHUNK], candidates)
        if exclude is not None:
            rows = np.flatnonzero(exclude[start : start + _CHUNK] >= 0)
            s[rows, exclude[start : start + _CHUNK][rows]] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        idx[start : start + len(s)] = order
        sims[start : start + len(s)] = np.take_along_axis(s, order, axis=1)
    return idx, sims


def match_ranks(
    a: np.ndarray, b: np.ndarray, *, tie_tolerance: float = TIE_TOLERANCE
) -> np.ndarray:
    """0-based rank of b[i] among all rows of b as a match for a[i].

    The rank is how many other rows j of b are at least as similar to a[i]
    as b[i] is (within `tie_tolerance`): ties count against the true match.
    """
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings differ in shape: {a.shape} vs {b.shape}")
    ranks = np.empty(len(a), np.int64)
    for start in range(0, len(a), _CHUNK):
        s = _common.cosine_matrix(a[start : start + _CHUNK], b)
        rows = np.arange(len(s))
        own = s[rows, start + rows]
        ranks[start : start + len(s)] = (s >= own[:, None] - tie_tolerance).sum(1) - 1
    return ranks


def retrieval_recall(
    a: np.ndarray, b: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """recall@k for each k, and the median rank (1 = first), of a -> b.

    recall@k: how often an object's own counterpart in the other modality is
    among the k most similar. Ties count against the true match
    (`match_ranks`), so a collapsed encoder (all embeddings equal) scores 0,
    never 1.
    """
    ranks = match_ranks(a, b)
    out = {f"recall@{k}": float(np.mean(ranks < k)) for k in ks}
    out["median_rank"] = float(np.median(ranks + 1))
    return out


def cross_modal_recall(
    embeddings: dict[str, np.ndarray], ks: Sequence[int] = (1, 5)
) -> dict[str, dict[str, float]]:
    """retrieval_recall for every ordered pair of modalities, 'a->b' keys."""
    names = [m for m in embeddings if m != store.FUSED]
    return {
        f"{a}->{b}": retrieval_recall(embeddings[a], embeddings[b], ks)
        for a in names
        for b in names
        if a != b
    }


def neighbour_table(
    query: store.Split,
    candidates: store.Split,
    rows: np.ndarray,
    k: int,
) -> dict[str, list]:
    """Columns of a long table: each query row x query embedding x candidate
    embedding x rank. The query itself is skipped within its own modality.

    All encoders map into one space, so a query from any modality is matched
    against any other: a spectrum's nearest light curves, a light curve's
    nearest catalogue entries (Rizhko & Bloom 2024, arXiv:2411.08842).
    """
    same = query is candidates
    q_units = _common.unit_embeddings(query)
    c_units = q_units if same else _common.unit_embeddings(candidates)
    c_names = candidates.label_names
    cols = {
        k_: []
        for k_ in (
            "query_id",
            "query_label",
            "query_embedding",
            "neighbour_embedding",
            "rank",
            "neighbour_id",
            "neighbour_name",
            "neighbour_label",
            "cosine",
            "is_query_object",
        )
    }
    q_names = query.label_names
    for qk, q in q_units.items():
        for ck, c in c_units.items():
            exclude = rows if (same and qk == ck) else None
            idx, sims = top_k_neighbours(q[rows], c, k, exclude=exclude)
            for qi, row in enumerate(rows):
                for r, (j, s) in enumerate(zip(idx[qi], sims[qi], strict=True)):
                    cols["query_id"].append(query.index["id"][row])
                    cols["query_label"].append(q_names[row])
                    cols["query_embedding"].append(qk)
                    cols["neighbour_embedding"].append(ck)
                    cols["rank"].append(r + 1)
                    cols["neighbour_id"].append(candidates.index["id"][j])
                    cols["neighbour_name"].append(candidates.index["name"][j])
                    cols["neighbour_label"].append(c_names[j])
                    cols["cosine"].append(s)
                    cols["is_query_object"].append(bool(same and j == row))
    return cols


def query_rows(split: store.Split, ids: Sequence[str] | None, n: int) -> np.ndarray:
    """Rows of the given ids (error naming an unknown id), else the first n."""
    if not ids:
        return np.arange(min(n, len(split)))
    where = {v: i for i, v in enumerate(split.index["id"])}
    missing = [i for i in ids if i not in where]
    if missing:
        raise KeyError(f"split {split.name!r} has no object with id {missing[0]!r}")
    return np.array([where[i] for i in ids], np.int64)


def run(
    export_dir,
    out_dir,
    *,
    split: str = "test",
    candidate_split: str | None = None,
    ids: Sequence[str] | None = None,
    n_queries: int = 5,
    k: int = 10,
    ks: Sequence[int] = (1, 5),
) -> dict:
    """Writes neighbours.csv and retrieval.json; returns the retrieval numbers."""
    out = pathlib.Path(out_dir)
    query = _common.load(export_dir, split)
    cands = query
    if candidate_split and candidate_split != split:
        cands = _common.load(export_dir, candidate_split)
    rows = query_rows(query, ids, n_queries)
    _common.write_csv(out / "neighbours.csv", neighbour_table(query, cands, rows, k))
    units = _common.unit_embeddings(query)
    recall = cross_modal_recall(units, ks)
    result = {"split": split, "n_objects": len(query), "retrieval": recall}
    _common.write_json(out / "retrieval.json", result)
    return result


def main(argv=None) -> int:
    p = _common.parser(__spec__.name, __doc__.split("\n\n")[0])
    p.add_argument("--split", default="test", help="split to query and score")
    p.add_argument("--candidate-split", default=None, help="split to search in")
    p.add_argument("--ids", nargs="*", default=None, help="ids of query objects")
    p.add_argument("--n-queries", type=int, default=5, help="without --ids")
    p.add_argument("--k", type=int, default=10, help="neighbours per query")
    args = p.parse_args(argv)
    result = run(
        args.embeddings,
        args.out,
        split=args.split,
        candidate_split=args.candidate_split,
        ids=args.ids,
        n_queries=args.n_queries,
        k=args.k,
    )
    rows = [
        (pair, v["recall@1"], v["recall@5"], v["median_rank"])
        for pair, v in result["retrieval"].items()
    ]
    print(f"cross-modal retrieval on {result['split']} ({result['n_objects']} objects)")
    print(_common.markdown_table(["query->target", "R@1", "R@5", "median rank"], rows))
    print(f"wrote {pathlib.Path(args.out) / 'neighbours.csv'} and retrieval.json")
    return 0


if __name__ == "__main__":
    sys.exit(_common.entry(main))
