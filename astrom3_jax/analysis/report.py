"""Every analysis on one export, and one summary.json of the headline numbers.

    python -m astrom3_jax.analysis.report --embeddings EXPORT --out OUT \\
        [--mislabel-k 50] [--outlier-methods knn isolation_forest lof] \\
        [--projection umap|pca] [--umap-epochs N] \\
        [--max-points 5000] [--shots 1 5 10 20 50 100] [--seeds 0 1 2 3 4]

writes OUT/{similarity,classify,mislabels,mislabels_knn,outliers,maps}/ (each
analysis's files) and OUT/summary.json; `astrom3_jax.analysis.compare` sets
two side by side.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

from astrom3_jax.analysis import (
    _common,
    classify,
    compare,
    maps,
    mislabels,
    outliers,
    similarity,
    store,
)


def _export_info(export_dir) -> dict:
    try:
        manifest = store.read_manifest(export_dir)
    except FileNotFoundError:
        manifest = {}
    info = {"embeddings": str(export_dir)}
    for key in ("source", "workdir", "dataset", "step", "embed_dim", "modalities"):
        if key in manifest:
            info[key] = manifest[key]
    return info


def run(
    export_dir,
    out_dir,
    *,
    eval_split: str = "test",
    knn_k: int = 5,
    mislabel_k: int = mislabels.DEFAULT_K,
    outlier_k: int = outliers.DEFAULT_K,
    outlier_methods: Sequence[str] = outliers.DEFAULT_METHODS,
    shots: Sequence[int] = classify.DEFAULT_SHOTS,
    seeds: Sequence[int] = classify.DEFAULT_SEEDS,
    projection: str = "umap",
    umap_epochs: int | None = None,
    max_points: int | None = maps.DEFAULT_MAX_POINTS,
) -> dict:
    """Runs similarity, classify, mislabels, outliers and maps into
    subfolders of out_dir; writes and returns the summary."""
    out = pathlib.Path(out_dir)
    present = store.list_splits(export_dir)
    summary = {"export": _export_info(export_dir)}

    sim = similarity.run(export_dir, out / "similarity", split=eval_split)
    summary["retrieval"] = {
        pair: {k: v[k] for k in ("recall@1", "recall@5")}
        for pair, v in sim["retrieval"].items()
    }

    cls = classify.run(
        export_dir,
        out / "classify",
        test_split=eval_split,
        k=knn_k,
        shots=shots,
        seeds=seeds,
    )
    summary["accuracy"] = {
        key: {m: v[m]["accuracy"] for m in classify.METHODS}
        for key, v in cls["scores"].items()
    }

    # Both scores: the paper's centroid distance, and the nearest-neighbour
    # label disagreement, which finds far more planted mislabels in
    # pre-trained embeddings (a class is often several clumps, so its
    # centroid lies between them; docs/results/mislabels_random_init.md).
    for key, method in (("mislabels", "centroid"), ("mislabels_knn", "knn")):
        folder = out / key
        mis = mislabels.run(export_dir, folder, k=mislabel_k, method=method)
        if "scores" in mis:
            summary[key] = {
                "k": mis["k"],
                "n_planted": mis["n_planted"],
                **{
                    name: {m: v[m] for m in ("precision@k", "recall@k")}
                    for name, v in mis["scores"].items()
                },
            }

    splits = [s for s in (eval_split, "unseen") if s in present]
    outl = outliers.run(
        export_dir,
        out / "outliers",
        splits=splits,
        k=outlier_k,
        methods=outlier_methods,
    )
    if "unseen_vs_test_auc" in outl:
        summary["unseen_auc"] = outl["unseen_vs_test_auc"]

    mp = maps.run(
        export_dir,
        out / "maps",
        projection=projection,
        n_epochs=umap_epochs,
        max_points=max_points,
    )
    summary["silhouette"] = {
        key: {pair: v["silhouette"] for pair, v in per.items()}
        for key, per in mp["silhouettes"].items()
    }
    _common.write_json(out / "summary.json", summary)
    return summary


def main(argv=None) -> int:
    p = _common.parser(__spec__.name, __doc__.split("\n\n")[0])
    p.add_argument("--eval-split", default="test")
    p.add_argument("--knn-k", type=int, default=5)
    p.add_argument("--mislabel-k", type=int, default=mislabels.DEFAULT_K)
    p.add_argument("--outlier-k", type=int, default=outliers.DEFAULT_K)
    p.add_argument(
        "--outlier-methods",
        nargs="+",
        choices=outliers.METHODS,
        default=list(outliers.DEFAULT_METHODS),
    )
    p.add_argument("--shots", type=int, nargs="*", default=list(classify.DEFAULT_SHOTS))
    p.add_argument("--seeds", type=int, nargs="*", default=list(classify.DEFAULT_SEEDS))
    p.add_argument("--projection", choices=sorted(maps.PROJECTIONS), default="umap")
    p.add_argument("--umap-epochs", type=int, default=None)
    p.add_argument("--max-points", type=int, default=maps.DEFAULT_MAX_POINTS)
    args = p.parse_args(argv)
    summary = run(
        args.embeddings,
        args.out,
        eval_split=args.eval_split,
        knn_k=args.knn_k,
        mislabel_k=args.mislabel_k,
        outlier_k=args.outlier_k,
        outlier_methods=args.outlier_methods,
        shots=args.shots,
        seeds=args.seeds,
        projection=args.projection,
        umap_epochs=args.umap_epochs,
        max_points=args.max_points,
    )
    print(compare.markdown([summary], [args.embeddings]))
    print(f"wrote {pathlib.Path(args.out) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(_common.entry(main))
