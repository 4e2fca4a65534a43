"""What a light curve's shape adds to its catalogue numbers, on the test split.

The light-curve encoder reads, besides the curve's rows (time, flux, error),
six per-object numbers tiled onto every row (`photometry_aux`): the z-scored
ASAS-SN catalogue amplitude, log10 period, Lafler-Kinman string length
(lksl_statistic) and random-forest score (rfr_score), then the curve's
log10 MAD and its time span in years. For each training seed this script
measures, on the test split:

- lightcurve: the light-curve classifier (the `photo,full,<preset>`
  fine-tuning config, from scratch, best checkpoint) on the split as it is;
- shuffled: the SAME trained classifier on a copy of the split in which each
  object's (flux, error) pairs are permuted at random among its own time
  stamps: the time column, the row count and the six aux numbers are
  unchanged (so are the curve's mean, MAD and value distribution), only the
  order of the values in time is lost. The whole stored curve is permuted
  before the evaluation's centre crop; `window_shuffled` permutes only the
  rows of the centre crop the model reads (the same values it saw, in
  another order). `--shuffle_draws` permutations, metrics averaged;
- catalogue: classifiers on the six aux numbers alone, standardised on the
  training split and fitted on it with scikit-learn's default settings
  (nothing tuned, the test split only scored): gradient-boosted trees
  (HistGradientBoostingClassifier, the headline) and logistic regression;
  also the trees on the four ASAS-SN catalogue numbers only;
- shape_only (optional): the light-curve classifier retrained with the six
  aux numbers set to 0 in every split (curve rows only), and shuffled as above;
- aux_only (optional): the light-curve classifier retrained with the flux
  and error channels set to 0 in every split (the time stamps, the row mask
  and the six aux numbers kept): the same network on the catalogue numbers.

Accuracy, balanced accuracy and macro F1 are `tasks.classification_report`'s,
the definitions of every run's eval.json. Target: the light-curve classifier
beats the catalogue numbers alone (trees) by at least 5 accuracy points.
Workdirs in --work are reused when finished (each holds a marker naming its
variant); an unfinished one resumes.

    python benchmarks/lightcurve_shape.py --work /tmp/lcshape \\
        --json docs/results/lightcurve_shape_cpu.json      # 3 seeds, ~40 min on 2 cores
    python benchmarks/lightcurve_shape.py --variants lightcurve --seeds 42
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

from astrom3_jax.cli import host_memory  # noqa: E402
from astrom3_jax.data import modalities, schema  # noqa: E402
from astrom3_jax.data.source_reader import PackedSource  # noqa: E402

VARIANTS = ("lightcurve", "shape_only", "aux_only")
SPLITS = ("train", "validation", "test")
FIELDS = ("photometry", "photometry_aux", "label", "id")
MARKER = "lightcurve_shape.json"  # in each workdir: which variant trained it
TARGET_POINTS = 5.0
CATALOGUE_ASASSN = 4  # the first 4 aux numbers are ASAS-SN's catalogue columns


# ------------------------------------------------------- copies of a split
def pack(source) -> PackedSource:
    """The fields a light-curve classifier reads (and its reports), in memory."""
    return PackedSource.from_source(source, FIELDS, ("photometry",))


def _with(packed: PackedSource, **columns) -> PackedSource:
    return PackedSource({**packed.columns, **columns}, packed.ragged_fields)


def _curves(packed: PackedSource) -> list[np.ndarray]:
    col = packed.columns["photometry"]
    return [np.array(col.row(i), np.float32) for i in range(len(col))]


def _from_curves(packed: PackedSource, rows: list[np.ndarray]) -> PackedSource:
    return _with(packed, photometry=modalities.Ragged.from_list(rows, (3,), np.float32))


def shuffle_window(n: int, seq_len: int | None) -> tuple[int, int]:
    """Rows [lo, hi) of an n-row curve that a shuffle permutes: all of them
    (seq_len None) or the evaluation's centre crop of seq_len rows."""
    if seq_len is None:
        return 0, n
    lo = int(modalities.crop_starts(np.array([n]), seq_len, False, np.zeros(1))[0])
    return lo, lo + min(n, seq_len)


def shuffled(packed: PackedSource, draw: int, seq_len: int | None = None):
    """A copy of `packed` whose objects' (flux, error) pairs are permuted
    among their own time stamps (object i with np.random.default_rng([draw,
    i])); times, row counts, aux numbers, labels and ids are unchanged.
    With `seq_len`, only the rows of the evaluation's centre crop move."""
    rows = _curves(packed)
    for i, curve in enumerate(rows):
        lo, hi = shuffle_window(len(curve), seq_len)
        perm = np.random.default_rng([draw, i]).permutation(hi - lo)
        curve[lo:hi, 1:] = curve[lo:hi, 1:][perm]
    return _from_curves(packed, rows)


def without_aux(packed: PackedSource) -> PackedSource:
    """A copy with the six aux numbers set to 0 (curve rows only)."""
    aux = np.zeros_like(np.asarray(packed.columns["photometry_aux"]))
    return _with(packed, photometry_aux=aux)


def without_values(packed: PackedSource) -> PackedSource:
    """A copy with the flux and error channels set to 0 (times, row counts and
    aux numbers kept)."""
    rows = _curves(packed)
    for curve in rows:
        curve[:, 1:] = 0.0
    return _from_curves(packed, rows)


TRANSFORMS = {"lightcurve": None, "shape_only": without_aux, "aux_only": without_values}


# ------------------------------------------------------------- the network
def make_config(args, seed: int):
    from astrom3_jax.configs import finetune

    config = finetune.get_config(f"photo,full,{args.preset}")
    config.dataset = args.dataset
    config.data_dir = args.data_dir or ""
    config.seed = seed
    return config


def train(args, variant: str, seed: int, packed: dict) -> tuple[str, dict]:
    """The workdir of `variant` at `seed`, trained (or resumed) unless finished."""
    from astrom3_jax import training
    from astrom3_jax.training import reports

    workdir = os.path.join(args.work, f"{variant}_s{seed}")
    marker = {"variant": variant, "seed": seed, "dataset": args.dataset}
    path = os.path.join(workdir, MARKER)
    if os.path.exists(workdir) and os.listdir(workdir):
        found = json.load(open(path)) if os.path.exists(path) else None
        if found != marker:
            raise SystemExit(
                f"{workdir} holds another run ({found}); want {marker}: "
                "remove it or pick another --work"
            )
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(marker, f)
    info = {"workdir": workdir, "reused": True, "train_seconds": None}
    if not os.path.exists(os.path.join(workdir, reports.EVAL_FILE)):
        transform = TRANSFORMS[variant]
        sources = None  # the lightcurve variant trains exactly as the command line
        if transform is not None:
            sources = {s: transform(packed[s]) for s in SPLITS}
        start = time.perf_counter()
        training.run(make_config(args, seed), workdir, sources=sources)
        info.update(reused=False, train_seconds=time.perf_counter() - start)
    with open(os.path.join(workdir, reports.EVAL_FILE)) as f:
        written = json.load(f)
    info["eval_json"] = {m: written[m] for m in METRICS}
    return workdir, info


def scorer(workdir: str, config):
    """score(source) -> (labels, logits) of the workdir's best checkpoint; the
    model is compiled once for every source."""
    from astrom3_jax.training import evaluation, tasks
    from astrom3_jax.training import workdir as workdir_lib

    model, _ = workdir_lib.restore_model(workdir, "best")
    predictor = evaluation.Predictor(
        model, seed=config.seed, outputs_fn=tasks.classification_task().eval_fn
    )

    def score(source):
        got = predictor.run(
            source,
            batch_size=config.test_batch_size or config.eval_batch_size,
            modalities=config.model.modalities,
            seq_len=config.seq_len,
        )
        return got.columns["label"], got.outputs["logits"]

    return score


# ------------------------------------------------------------------ metrics
def report(labels, scores, names) -> dict:
    """The metrics, per-class recall, confusion matrix and predictions (one
    character per test object: the index of the predicted class)."""
    from astrom3_jax.training import tasks

    r = tasks.classification_report(labels, scores, names)
    return {
        "accuracy": r["accuracy"],
        "balanced_accuracy": r["balanced_accuracy"],
        "macro_f1": r["macro_f1"],
        "recall": {c: v["recall"] for c, v in r["per_class"].items()},
        "confusion_matrix": r["confusion_matrix"],
        "pred": encode(np.argmax(scores, -1)),
    }


def encode(classes) -> str:
    """Class indices as a string, one base-36 digit per object."""
    return "".join(np.base_repr(int(k), 36) for k in classes)


def decode(text: str) -> np.ndarray:
    return np.array([int(c, 36) for c in text], np.int64)


def preds(rep: dict) -> np.ndarray:
    return decode(rep["pred"])


METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def average(reps: list[dict], reference: dict) -> dict:
    """Metrics and recalls averaged over shuffle draws; each draw's metrics
    and its share of predictions that differ from `reference`'s."""
    draws = [
        {**{m: r[m] for m in METRICS}, "changed": changed(reference, r)} for r in reps
    ]
    out = {m: float(np.mean([d[m] for d in draws])) for m in (*METRICS, "changed")}
    out["recall"] = {
        c: float(np.mean([r["recall"][c] for r in reps])) for c in reps[0]["recall"]
    }
    out["draws"] = draws
    return out


def changed(a: dict, b: dict) -> float:
    """Share of objects whose predicted class differs between two reports."""
    return float(np.mean(preds(a) != preds(b)))


def catalogue_classifiers(packed: dict, names, seed: int) -> dict:
    """Trees and logistic regression on the aux numbers (train split only)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def xy(split, n_cols):
        col = packed[split].columns
        x = np.asarray(col["photometry_aux"], np.float64)[:, :n_cols]
        return x, np.asarray(col["label"], np.int64)

    models = {
        "trees_aux6": (HistGradientBoostingClassifier(random_state=seed), 6),
        "logistic_aux6": (LogisticRegression(max_iter=5000), 6),
        "trees_asassn4": (
            HistGradientBoostingClassifier(random_state=seed),
            CATALOGUE_ASASSN,
        ),
    }
    out = {}
    for name, (clf, n_cols) in models.items():
        x, y = xy("train", n_cols)
        fitted = make_pipeline(StandardScaler(), clf).fit(x, y)
        xt, yt = xy("test", n_cols)
        proba = np.zeros((len(yt), len(names)))
        proba[:, fitted.classes_] = fitted.predict_proba(xt)
        out[name] = report(yt, proba, names)
    return out


def mcnemar(a_pred, b_pred, labels) -> dict:
    """Exact McNemar test on the objects one classifier gets right and the
    other wrong."""
    from scipy import stats

    a, b = a_pred == labels, b_pred == labels
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = stats.binomtest(only_a, n, 0.5).pvalue if n else 1.0
    return {"only_first_right": only_a, "only_second_right": only_b, "p": float(p)}


def bootstrap_difference(a_right, b_right, n=10000, seed=0) -> list[float]:
    """95% interval of mean(a_right - b_right) over objects resampled."""
    d = np.asarray(a_right, float) - np.asarray(b_right, float)
    idx = np.random.default_rng(seed).integers(0, len(d), (n, len(d)))
    means = d[idx].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


# -------------------------------------------------------------------- main
def measure(args) -> dict:
    from astrom3_jax.data import datasets

    if args.manual_dir:
        datasets.prepare(args.dataset, args.data_dir, args.manual_dir, num_workers=0)
    sources = datasets.open_sources(args.dataset, SPLITS, args.data_dir)
    packed = {s: pack(sources[s]) for s in SPLITS}
    config = make_config(args, args.seeds[0])
    names = list(schema.CLASSES)[: config.model.num_classes]
    labels = np.asarray(packed["test"].columns["label"], np.int64)
    seq_len = config.seq_len
    draws = range(args.shuffle_draws)
    shuffles = {
        "shuffled": [shuffled(packed["test"], d) for d in draws],
        "window_shuffled": [shuffled(packed["test"], d, seq_len) for d in draws],
    }
    result = {
        "dataset": args.dataset,
        "preset": args.preset,
        "config": f"photo,full,{args.preset}",
        "objects": {s: len(packed[s]) for s in SPLITS},
        "seq_len": seq_len,
        "aux_names": list(schema.PHOTOMETRY_AUX),
        "class_names": names,
        "test_labels": encode(labels),
        "test_support": {c: int(np.sum(labels == i)) for i, c in enumerate(names)},
        "seeds": list(args.seeds),
        "variants": list(args.variants),
        "shuffle_draws": args.shuffle_draws,
        "runs": {},
        "catalogue": {},
    }
    for seed in args.seeds:
        result["catalogue"][str(seed)] = catalogue_classifiers(packed, names, seed)
        for variant in args.variants:
            workdir, info = train(args, variant, seed, packed)
            score = scorer(workdir, make_config(args, seed))
            transform = TRANSFORMS[variant] or (lambda p: p)
            run = dict(info, test=report(*score(transform(packed["test"])), names))
            if variant != "aux_only":  # its curve values are all 0: nothing to shuffle
                for kind, copies in shuffles.items():
                    reps = [report(*score(transform(c)), names) for c in copies]
                    run[kind] = average(reps, run["test"])
            result["runs"][f"{variant}_s{seed}"] = run
            print(f"seed {seed} {variant}: " + line(run), flush=True)
    result["summary"] = summarise(result)
    return result


def line(run: dict) -> str:
    parts = [f"as is {100 * run['test']['accuracy']:.2f}"]
    for kind in ("shuffled", "window_shuffled"):
        if kind in run:
            parts.append(
                f"{kind} {100 * run[kind]['accuracy']:.2f} "
                f"({100 * run[kind]['changed']:.1f}% of predictions changed)"
            )
    return ", ".join(parts)


def rows_of(result: dict) -> dict:
    """{row name: {seed: report}} for every classifier and test copy."""
    rows: dict = {}
    for seed in result["seeds"]:
        for variant in result["variants"]:
            run = result["runs"][f"{variant}_s{seed}"]
            for kind in ("test", "shuffled", "window_shuffled"):
                if kind in run:
                    name = variant if kind == "test" else f"{variant}, {kind}"
                    rows.setdefault(name, {})[seed] = run[kind]
        for name, rep in result["catalogue"][str(seed)].items():
            rows.setdefault(f"catalogue: {name}", {})[seed] = rep
    return rows


def summarise(result: dict) -> dict:
    labels = decode(result["test_labels"])
    rows = rows_of(result)
    table = {}
    for name, per_seed in rows.items():
        table[name] = {}
        for m in METRICS:
            v = [100 * per_seed[s][m] for s in result["seeds"]]
            table[name][m] = {
                "per_seed": v,
                "mean": float(np.mean(v)),
                "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            }
        table[name]["recall"] = {
            c: float(np.mean([100 * per_seed[s]["recall"][c] for s in per_seed]))
            for c in result["class_names"]
        }
    out = {"table": table}
    if "lightcurve" in result["variants"]:
        lc = rows["lightcurve"]
        cat = rows["catalogue: trees_aux6"]
        seeds = result["seeds"]
        diff = {
            m: [100 * (lc[s][m] - cat[s][m]) for s in seeds] for m in METRICS
        }  # fmt: skip
        lc_right = np.mean([preds(lc[s]) == labels for s in seeds], 0)
        cat_right = preds(cat[seeds[0]]) == labels
        out["lightcurve_minus_catalogue"] = {
            "per_seed": diff,
            "mean": {m: float(np.mean(v)) for m, v in diff.items()},
            "mcnemar_per_seed": {
                str(s): mcnemar(preds(lc[s]), preds(cat[s]), labels) for s in seeds
            },
            "accuracy_bootstrap_95": [
                100 * v for v in bootstrap_difference(lc_right, cat_right)
            ],
        }
        mean_acc = out["lightcurve_minus_catalogue"]["mean"]["accuracy"]
        out["target"] = {
            "points": TARGET_POINTS,
            "accuracy_gain": mean_acc,
            "met": bool(mean_acc >= TARGET_POINTS),
        }
    return out


def print_table(result: dict) -> None:
    seeds = result["seeds"]
    table = result["summary"]["table"]
    print(
        f"\n{result['dataset']}: "
        + ", ".join(f"{s} {n}" for s, n in result["objects"].items())
        + f" objects; seeds {', '.join(map(str, seeds))}; test split\n"
    )
    head = " | ".join(f"{m} (seed {s})" for m in ("acc",) for s in seeds)
    print(f"| classifier | {head} | accuracy | balanced accuracy | macro F1 |")
    print("|---" * (len(seeds) + 4) + "|")
    for name, t in table.items():
        per = " | ".join(f"{v:.2f}" for v in t["accuracy"]["per_seed"])
        means = " | ".join(
            f"{t[m]['mean']:.2f} ± {t[m]['std']:.2f}" for m in METRICS
        )  # fmt: skip
        print(f"| {name} | {per} | {means} |")
    gain = result["summary"].get("lightcurve_minus_catalogue")
    if gain:
        lo, hi = gain["accuracy_bootstrap_95"]
        t = result["summary"]["target"]
        print(
            f"\nlight curve - catalogue numbers (trees): accuracy "
            f"{gain['mean']['accuracy']:+.2f} points (95% bootstrap over test "
            f"objects {lo:+.2f} to {hi:+.2f}), balanced accuracy "
            f"{gain['mean']['balanced_accuracy']:+.2f}, macro F1 "
            f"{gain['mean']['macro_f1']:+.2f}; target >= {t['points']:.0f}: "
            f"{'met' if t['met'] else 'not met'}"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic_small_full_42")
    p.add_argument("--data_dir", default=None, help="TFDS data_dir (default TFDS's)")
    p.add_argument("--manual_dir", default=None, help="build --dataset from here")
    p.add_argument("--preset", default="cpu", choices=("cpu", "smoke"))
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 66])
    p.add_argument(
        "--variants", type=lambda s: s.split(","), default=list(VARIANTS),
        help=f"comma-separated, of {','.join(VARIANTS)}",
    )  # fmt: skip
    p.add_argument("--shuffle_draws", type=int, default=3)
    p.add_argument("--work", default="runs/lightcurve_shape", help="workdirs here")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--notcmalloc", action="store_true")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    # replaces this process when tcmalloc is installed
    malloc = host_memory.reexec_with_tcmalloc(enabled=not args.notcmalloc)
    print(malloc, flush=True)
    result = measure(args)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
