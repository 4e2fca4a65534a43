"""2-D maps of the embedding space and how well it separates known subtypes.

    python -m astrom3_jax.analysis.maps --embeddings EXPORT --out OUT \\
        [--splits train val test unseen] [--projection umap|pca] \\
        [--n-neighbors 22] [--min-dist 0.1] [--n-epochs N] [--max-points 5000]

writes OUT/map_<embedding>.csv (2-D coordinates), OUT/map_<embedding>_class.png,
OUT/map_<embedding>_subtype.png and OUT/silhouettes.json.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable, Sequence

import numpy as np

from astrom3_jax.analysis import _common, store

# Ground-truth subtype pairs of the synthetic survey, by class.
SUBTYPE_PAIRS = {"M": ("carbon", "oxygen"), "ROT": ("dwarf", "giant")}
DEFAULT_MAX_POINTS = 5000


def pair_name(cls: str, pair: Sequence[str]) -> str:
    return f"{cls}:{pair[0]}/{pair[1]}"


def subtype_silhouettes(
    x: np.ndarray,
    subtypes: np.ndarray,
    pairs: dict[str, Sequence[str]] = SUBTYPE_PAIRS,
) -> dict[str, dict]:
    """Cosine silhouette of each subtype pair over the objects that carry one
    of its two subtypes; NaN when either group has fewer than 2 objects.

    In AstroM3's maps, Mira variables split into carbon- and oxygen-rich
    groups and rotational variables into two subclasses, although no label
    ever told the model about them (Rizhko & Bloom 2024, arXiv:2411.08842).
    This measures that split on the embeddings themselves (not on a map).

    Returns {'M:carbon/oxygen': {'silhouette', 'n': {subtype: count}}, ...}.
    """
    metrics = _common.require("sklearn.metrics", "subtype silhouettes")
    out = {}
    for cls, pair in pairs.items():
        rows = np.flatnonzero(np.isin(subtypes, pair))
        counts = {s: int(np.sum(subtypes[rows] == s)) for s in pair}
        value = float("nan")
        if min(counts.values()) >= 2:
            value = float(
                metrics.silhouette_score(x[rows], subtypes[rows], metric="cosine")
            )
        out[pair_name(cls, pair)] = {"silhouette": value, "n": counts}
    return out


def project_umap(
    x: np.ndarray,
    *,
    n_neighbors: int = 22,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """(N, 2) UMAP coordinates with the cosine metric (umap-learn).

    AstroM3 draws its maps with n_neighbors 22, or 45 with min_dist 0.7.
    """
    umap = _common.require("umap", "UMAP maps")
    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, len(x) - 1),
        min_dist=min_dist,
        n_epochs=n_epochs,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
    )
    return reducer.fit_transform(x)


def project_pca(x: np.ndarray, *, seed: int = 0, **_) -> np.ndarray:
    """(N, 2) first two principal components: a fast stand-in for UMAP."""
    decomposition = _common.require("sklearn.decomposition", "PCA maps")
    return decomposition.PCA(n_components=2, random_state=seed).fit_transform(x)


PROJECTIONS: dict[str, Callable[..., np.ndarray]] = {
    "umap": project_umap,
    "pca": project_pca,
}


def pick_points(subtypes: np.ndarray, max_points: int | None, seed: int) -> np.ndarray:
    """Sorted rows to draw: every object with a subtype, then random others
    up to max_points (all rows when max_points is None or not exceeded)."""
    n = len(subtypes)
    if max_points is None or n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    special = np.flatnonzero(subtypes != "")
    if len(special) >= max_points:
        return np.sort(rng.choice(special, max_points, replace=False))
    rest = np.setdiff1d(np.arange(n), special)
    extra = rng.choice(rest, max_points - len(special), replace=False)
    return np.sort(np.concatenate([special, extra]))


def plot_map(
    coords: np.ndarray, groups: np.ndarray, path, title: str, *, muted: str = ""
) -> pathlib.Path:
    """Scatter plot of 2-D coordinates, one colour per group (Agg backend);
    the `muted` group is drawn small and grey underneath."""
    figure = _common.require("matplotlib.figure", "plots")
    agg = _common.require("matplotlib.backends.backend_agg", "plots")
    colormaps = _common.require("matplotlib", "plots").colormaps
    fig = figure.Figure(figsize=(7.5, 6), layout="constrained")
    agg.FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = sorted(set(groups.tolist()) - {muted})
    if len(names) <= 10:
        colours = colormaps["tab10"].colors
    else:  # tab20's dark shades first, then the light ones: neighbours differ
        tab20 = colormaps["tab20"].colors
        colours = tab20[0::2] + tab20[1::2]
    if np.any(groups == muted):
        m = groups == muted
        ax.scatter(*coords[m].T, s=3, c="0.8", label=muted or "none", rasterized=True)
    for i, name in enumerate(names):
        m = groups == name
        size = 6 if m.sum() > 200 else 14
        colour = colours[i % len(colours)]
        ax.scatter(*coords[m].T, s=size, color=colour, label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.savefig(path, dpi=110)
    return pathlib.Path(path)


def class_groups(split: store.Split) -> np.ndarray:
    """Colour groups by class: the label, or 'unseen:<true class>' for unseen."""
    if split.name == "unseen":
        truth = split.index.get("true_target", split.label_names)
        return np.char.add("unseen:", truth.astype(str))
    return split.label_names


def run(
    export_dir,
    out_dir,
    *,
    splits: Sequence[str] | None = None,
    projection: str = "umap",
    n_neighbors: int = 22,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    max_points: int | None = DEFAULT_MAX_POINTS,
    seed: int = 0,
) -> dict:
    """Writes the maps and silhouettes.json; returns the silhouettes.

    Maps are drawn per modality and fused, coloured by class and by subtype;
    the silhouettes are those of `subtype_silhouettes`.

    Silhouettes use every selected object; only the maps are subsampled.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {sorted(PROJECTIONS)}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = list(splits or store.list_splits(export_dir))
    loaded = [_common.load(export_dir, s) for s in splits]
    keys = _common.embedding_keys(loaded[0])
    units = {k: np.concatenate([s.unit(k) for s in loaded]) for k in keys}
    info = [_common.object_columns(s) for s in loaded]
    cols = {c: np.concatenate([i[c] for i in info]) for c in info[0]}
    cols["split"] = np.concatenate([np.full(len(s), s.name) for s in loaded])
    classes = np.concatenate([class_groups(s) for s in loaded])
    subtypes = cols.get("subtype", np.full(len(classes), ""))
    silhouettes = {k: subtype_silhouettes(units[k], subtypes) for k in keys}
    rows = pick_points(subtypes, max_points, seed)
    project = PROJECTIONS[projection]
    for key in keys:
        xy = project(
            units[key][rows],
            n_neighbors=n_neighbors,
            min_dist=min_dist,
            n_epochs=n_epochs,
            seed=seed,
        )
        table = {c: v[rows] for c, v in cols.items()} | {"x": xy[:, 0], "y": xy[:, 1]}
        _common.write_csv(out / f"map_{key}.csv", table)
        title = f"{key} ({projection}, {len(rows)} objects)"
        plot_map(xy, classes[rows], out / f"map_{key}_class.png", f"{title}: class")
        if "subtype" in cols:
            plot_map(
                xy, subtypes[rows], out / f"map_{key}_subtype.png", f"{title}: subtype"
            )
    result = {
        "splits": splits,
        "projection": projection,
        "n_points_drawn": int(len(rows)),
        "silhouettes": silhouettes,
    }
    _common.write_json(out / "silhouettes.json", result)
    return result


def main(argv=None) -> int:
    p = _common.parser(__spec__.name, __doc__.split("\n\n")[0])
    p.add_argument("--splits", nargs="*", default=None, help="default: all")
    p.add_argument("--projection", choices=sorted(PROJECTIONS), default="umap")
    p.add_argument("--n-neighbors", type=int, default=22)
    p.add_argument("--min-dist", type=float, default=0.1)
    p.add_argument("--n-epochs", type=int, default=None, help="UMAP epochs")
    p.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    result = run(
        args.embeddings,
        args.out,
        splits=args.splits,
        projection=args.projection,
        n_neighbors=args.n_neighbors,
        min_dist=args.min_dist,
        n_epochs=args.n_epochs,
        max_points=args.max_points,
        seed=args.seed,
    )
    pairs = [pair_name(c, p) for c, p in SUBTYPE_PAIRS.items()]
    rows = [
        (key, *(v[name]["silhouette"] for name in pairs))
        for key, v in result["silhouettes"].items()
    ]
    print("cosine silhouette of the subtypes within their class")
    print(_common.markdown_table(["embedding", *pairs], rows))
    n = result["n_points_drawn"]
    print(f"wrote {n}-point maps and silhouettes.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(_common.entry(main))
