"""Classification from frozen embeddings: prototypes, k-NN and a linear probe.

    python -m astrom3_jax.analysis.classify --embeddings EXPORT --out OUT \\
        [--train-split train] [--test-split test] [--k 5] \\
        [--shots 1 5 10 20 50 100] [--seeds 0 1 2 3 4]

writes OUT/classification.{json,csv}, OUT/predictions.csv and
OUT/few_shot.{json,png}.
"""

from __future__ import annotations

import pathlib
import sys
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from astrom3_jax.analysis import _common, store

METHODS = ("prototype", "knn", "probe")
DEFAULT_SHOTS = (1, 5, 10, 20, 50, 100)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def class_centroids(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes present, their unit centroids) from unit rows x and labels y."""
    classes = np.unique(y)
    sums = np.stack([x[y == c].sum(0) for c in classes])
    return classes, store.normalise_rows(sums, "class centroids")


def predict_prototype(train_x, train_y, test_x, **_) -> np.ndarray:
    """Label of the most cosine-similar class centroid."""
    classes, centroids = class_centroids(train_x, train_y)
    return classes[np.argmax(_common.cosine_matrix(test_x, centroids), axis=1)]


def predict_knn(train_x, train_y, test_x, *, k: int = 5, **_) -> np.ndarray:
    """Majority label among the k nearest train objects by cosine distance."""
    neighbors = _common.require("sklearn.neighbors", "k-NN classification")
    model = neighbors.KNeighborsClassifier(
        n_neighbors=min(k, len(train_x)), metric="cosine", algorithm="brute"
    )
    return model.fit(train_x, train_y).predict(test_x)


def predict_probe(
    train_x, train_y, test_x, *, seed: int = 0, c: float = 1.0, **_
) -> np.ndarray:
    """L2-regularised logistic regression on the unit embeddings (a linear
    probe), scaled by sqrt(D) so that features have unit mean square.

    One scale for all features keeps the cosine geometry; per-feature
    standardisation would blow up near-constant noise directions, which
    ruins few-shot fits.
    """
    linear = _common.require("sklearn.linear_model", "the linear probe")
    threadpoolctl = _common.require("threadpoolctl", "the linear probe")
    if len(np.unique(train_y)) == 1:
        return np.full(len(test_x), train_y[0])
    scale = np.sqrt(train_x.shape[1])
    model = linear.LogisticRegression(C=c, max_iter=2000, random_state=seed)
    # Each solver step is a small matrix product: threaded BLAS gains little
    # there and, on a busy machine, made fits several times slower.
    with threadpoolctl.threadpool_limits(1):
        model.fit(train_x * scale, train_y)
    return model.predict(test_x * scale)


PREDICTORS: dict[str, Callable[..., np.ndarray]] = {
    "prototype": predict_prototype,
    "knn": predict_knn,
    "probe": predict_probe,
}


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """accuracy, balanced (class-averaged) accuracy and macro F1."""
    metrics = _common.require("sklearn.metrics", "classification scores")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes predicted but absent, etc.
        return {
            "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(
                metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)
            ),
        }


def evaluate(
    train: store.Split,
    test: store.Split,
    *,
    methods: Sequence[str] = METHODS,
    k: int = 5,
    seed: int = 0,
) -> tuple[dict, dict]:
    """(scores[embedding][method], predicted labels[embedding][method]).

    How much class information the contrastive space holds without any
    fine-tuning: each method trains on `train`'s embeddings and is scored on
    `test`, per modality and fused.

    With ground truth in `test`, 'accuracy_vs_truth' scores the predictions
    against true_target (objects of the known classes only).
    """
    train_units = _common.unit_embeddings(train)
    test_units = _common.unit_embeddings(test)
    truth = _truth_labels(test)
    results, predictions = {}, {}
    for key in train_units:
        results[key], predictions[key] = {}, {}
        for method in methods:
            pred = PREDICTORS[method](
                train_units[key], train.labels, test_units[key], k=k, seed=seed
            )
            results[key][method] = scores(test.labels, pred)
            if truth is not None:
                known = truth >= 0
                results[key][method]["accuracy_vs_truth"] = float(
                    np.mean(pred[known] == truth[known])
                )
            predictions[key][method] = pred
    return results, predictions


def _truth_labels(split: store.Split) -> np.ndarray | None:
    if not split.has_truth or split.class_names is None:
        return None
    lookup = {c: i for i, c in enumerate(split.class_names)}
    return np.array([lookup.get(t, -1) for t in split.index["true_target"]])


def sample_per_class(labels: np.ndarray, n: int, rng) -> np.ndarray:
    """Sorted row indices of up to n random objects of every class."""
    picked = [
        rng.choice(rows, size=min(n, len(rows)), replace=False)
        for rows in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(picked))


def few_shot(
    train: store.Split,
    test: store.Split,
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    methods: Sequence[str] = METHODS,
    k: int = 5,
) -> dict:
    """Test accuracy after training on n labelled objects per class.

    `evaluate` repeated with n labelled objects per class over several
    seeds: the label-scarce setting where AstroM3's pre-training pays off
    most (Rizhko & Bloom 2024, arXiv:2411.08842).

    Returns {embedding: {method: {n: {'mean', 'std', 'values'}}}}; the same
    sampled objects serve every embedding and method for a given (n, seed).
    k-NN uses min(k, n) neighbours: more would outvote the true class.
    """
    train_units = _common.unit_embeddings(train)
    test_units = _common.unit_embeddings(test)
    values = {key: {m: {n: [] for n in shots} for m in methods} for key in train_units}
    for n in shots:
        for seed in seeds:
            rows = sample_per_class(train.labels, n, np.random.default_rng(seed))
            for key, x in train_units.items():
                for method in methods:
                    pred = PREDICTORS[method](
                        x[rows],
                        train.labels[rows],
                        test_units[key],
                        k=min(k, n),
                        seed=seed,
                    )
                    values[key][method][n].append(float(np.mean(pred == test.labels)))
    return {
        key: {
            m: {
                str(n): {"mean": np.mean(v), "std": np.std(v), "values": v}
                for n, v in per_n.items()
            }
            for m, per_n in per_method.items()
        }
        for key, per_method in values.items()
    }


def plot_few_shot(curves: dict, path) -> pathlib.Path:
    """One panel per method: accuracy against labels per class, per embedding."""
    figure = _common.require("matplotlib.figure", "plots")
    agg = _common.require("matplotlib.backends.backend_agg", "plots")
    methods = list(next(iter(curves.values())))
    fig = figure.Figure(figsize=(4.2 * len(methods), 3.6), layout="constrained")
    agg.FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    for ax, method in zip(axes, methods, strict=True):
        for key, per_method in curves.items():
            per_n = per_method[method]
            n = [int(s) for s in per_n]
            mean = [per_n[s]["mean"] for s in per_n]
            std = [per_n[s]["std"] for s in per_n]
            ax.errorbar(n, mean, yerr=std, marker="o", capsize=3, label=key)
        ax.set_xscale("log")
        ax.set_xlabel("labelled objects per class")
        ax.set_title(method)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return pathlib.Path(path)


def run(
    export_dir,
    out_dir,
    *,
    train_split: str = "train",
    test_split: str = "test",
    k: int = 5,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
) -> dict:
    """Writes the classification and few-shot files; returns both results."""
    out = pathlib.Path(out_dir)
    train = _common.load(export_dir, train_split)
    test = _common.load(export_dir, test_split)
    results, predictions = evaluate(train, test, k=k)
    names = np.asarray(test.class_names) if test.class_names else None
    pred_cols = _common.object_columns(test)
    for key, per_method in predictions.items():
        for method, pred in per_method.items():
            pred_cols[f"{key}/{method}"] = pred if names is None else names[pred]
    _common.write_csv(out / "predictions.csv", pred_cols)
    flat = {"embedding": [], "method": []}
    for key, per_method in results.items():
        for method, metric in per_method.items():
            flat["embedding"].append(key)
            flat["method"].append(method)
            for name, value in metric.items():
                flat.setdefault(name, []).append(value)
    _common.write_csv(out / "classification.csv", flat)
    summary = {"train_split": train_split, "test_split": test_split, "k": k}
    _common.write_json(out / "classification.json", {**summary, "scores": results})
    curves = {}
    if shots:
        curves = few_shot(train, test, shots=shots, seeds=seeds, k=k)
        _common.write_json(
            out / "few_shot.json", {**summary, "seeds": list(seeds), "curves": curves}
        )
        plot_few_shot(curves, out / "few_shot.png")
    return {**summary, "scores": results, "few_shot": curves}


def main(argv=None) -> int:
    p = _common.parser(__spec__.name, __doc__.split("\n\n")[0])
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--k", type=int, default=5, help="neighbours for k-NN")
    p.add_argument(
        "--shots",
        type=int,
        nargs="*",
        default=list(DEFAULT_SHOTS),
        help="labelled objects per class for few-shot curves (none: skip them)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    args = p.parse_args(argv)
    result = run(
        args.embeddings,
        args.out,
        train_split=args.train_split,
        test_split=args.test_split,
        k=args.k,
        shots=args.shots,
        seeds=args.seeds,
    )
    rows = [
        (key, *(per_method[m]["accuracy"] for m in METHODS))
        for key, per_method in result["scores"].items()
    ]
    print(f"test accuracy ({args.train_split} -> {args.test_split})")
    print(_common.markdown_table(["embedding", *METHODS], rows))
    extra = ", few_shot.json, few_shot.png" if args.shots else ""
    print(f"wrote {args.out}/classification.json, .csv, predictions.csv{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(_common.entry(main))
