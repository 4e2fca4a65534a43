"""Calibration and out-of-distribution score of fine-tuned classifiers.

For each workdir (a classifier fine-tuned with the `calibrate` evaluator,
the default): its best checkpoint on the test split and on the synthetic
survey's `unseen` split (classes outside the ten, e.g. Cepheids labelled
RRAB); prints the test split's accuracy, NLL and expected calibration error
before and after its temperature, and the AUROC of the out-of-distribution
score for unseen against test objects, next to the max-softmax baseline
(1 - top calibrated probability). Three scores: the head features'
Mahalanobis distance, the density of the light-curve numbers (amplitude,
period, Lafler-Kinman statistic, second period), and the two joined as
predict joins them (the larger validation percentile). Target: AUROC >=
0.9. `--refit` fits the calibration again first (for runs calibrated before
the light-curve density or its second period existed).

    python benchmarks/calibration_ood.py runs/photo_cpu [runs/all_cpu ...]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from astrom3_jax import api
from astrom3_jax.data import datasets
from astrom3_jax.prediction import scoring
from astrom3_jax.training import calibration, calibration_files, evaluation
from astrom3_jax.training import workdir as workdir_lib


def measure(workdir: str, refit: bool = False) -> dict:
    config = api.with_defaults(workdir_lib.load_any_config(workdir))
    if refit:
        calibration_files.calibrate(
            config,
            workdir,
            datasets.open_sources(
                config.dataset, ("train", "validation"), config.data_dir or None
            ),
        )
    cal = calibration_files.load(workdir)
    if cal is None:
        raise SystemExit(f"{workdir} has no {calibration_files.CALIBRATION_FILE}")
    names = tuple(config.model.modalities)
    sources = datasets.open_sources(
        config.dataset, ("test", "unseen"), config.data_dir or None
    )
    model, _ = workdir_lib.restore_model(workdir, "best")
    predictor = evaluation.Predictor(model, seed=config.seed)
    got, numbers, predicted, joined = {}, {}, {}, {}
    stats = calibration_files.workdir_stats(workdir) if "photometry" in names else None
    kinds = None  # the unseen objects' true classes, where the data set has them
    for split, source in sources.items():
        ran = predictor.run(
            source, batch_size=config.eval_batch_size, modalities=names,
            seq_len=config.seq_len,
            host_fields=("label", calibration_files.AUX_FIELD, "true_target"),
        )  # fmt: skip
        if split == "unseen" and "true_target" in ran.columns:
            kinds = np.asarray([_text(v) for v in ran.columns["true_target"]])
        got[split] = calibration_files.split_features(ran, names)
        numbers[split] = calibration_files.light_curve_numbers(
            ran, names, calibration_files.second_period_column(source, stats)
        )
        logits_all = np.asarray(ran.outputs["logits"])
        predicted[split] = np.argmax(logits_all, axis=1)
        # predict's own score (prediction/scoring.py) of every object
        joined[split] = scoring.out_of_distribution(
            cal,
            calibration_files.masked_embeddings(ran, names),
            names,
            calibration.softmax(logits_all, cal.temperature),
            numbers[split],
        ).score
    feats, labels, logits = got["test"]
    before = calibration.softmax(logits)
    after = calibration.softmax(logits, cal.temperature)
    scores = {s: cal.ood.score(f) for s, (f, _, _) in got.items()}
    inputs = {s: np.full(len(f), np.nan) for s, (f, _, _) in got.items()}
    if cal.inputs is not None and numbers["test"] is not None:
        # under the class each object is predicted to be, as predict scores
        inputs = {s: cal.inputs.score(numbers[s], predicted[s]) for s in got}
    msp = {
        s: 1 - calibration.softmax(z, cal.temperature).max(1)
        for s, (_, _, z) in got.items()
    }
    return {
        "workdir": workdir,
        "dataset": config.dataset,
        "mode": config.get("mode", ""),
        "temperature": cal.temperature,
        "test_objects": len(labels),
        "unseen_objects": len(got["unseen"][1]),
        "test_accuracy": float(np.mean(np.argmax(logits, 1) == labels)),
        "test_nll": [
            calibration.nll(logits, labels),
            calibration.nll(logits, labels, cal.temperature),
        ],
        "test_ece": [
            calibration.expected_calibration_error(before, labels),
            calibration.expected_calibration_error(after, labels),
        ],
        "auroc_mahalanobis": calibration.auroc(scores["test"], scores["unseen"]),
        "auroc_max_softmax": calibration.auroc(msp["test"], msp["unseen"]),
        "auroc_light_curve_numbers": calibration.auroc(
            inputs["test"], inputs["unseen"]
        ),
        "auroc_joined": calibration.auroc(joined["test"], joined["unseen"]),
        "auroc_by_unseen_class": {
            kind: {
                name: calibration.auroc(score["test"], score["unseen"][kinds == kind])
                for name, score in (("mahalanobis", scores), ("joined", joined))
            }
            for kind in ([] if kinds is None else sorted(set(kinds)))
        },
    }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--refit", action="store_true", help="fit each calibration again first"
    )
    args = parser.parse_args()
    rows = [measure(w, args.refit) for w in args.workdirs]
    print(
        "| workdir | dataset | T | test acc | NLL before -> after | "
        "ECE before -> after | AUROC Mahalanobis | AUROC max-softmax | "
        "AUROC light-curve numbers | AUROC joined |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workdir']} | {r['dataset']} | {r['temperature']:.3f} | "
            f"{100 * r['test_accuracy']:.2f} | {r['test_nll'][0]:.3f} -> "
            f"{r['test_nll'][1]:.3f} | {r['test_ece'][0]:.4f} -> "
            f"{r['test_ece'][1]:.4f} | {r['auroc_mahalanobis']:.3f} | "
            f"{r['auroc_max_softmax']:.3f} | "
            f"{r['auroc_light_curve_numbers']:.3f} | {r['auroc_joined']:.3f} |"
        )
    for r in rows:
        by = r["auroc_by_unseen_class"]
        print(
            f"{r['workdir']}, AUROC by unseen class (Mahalanobis / joined): "
            + ", ".join(
                f"{k} {v['mahalanobis']:.3f} / {v['joined']:.3f}" for k, v in by.items()
            )
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
