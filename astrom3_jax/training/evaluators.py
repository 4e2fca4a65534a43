"""What a run evaluates, declared in `config.evals` as in big_vision.

`config.evals` maps a name to {type, split, every, prefix, options}:
`every='epoch'` evaluators turn each validation pass's per-row outputs into
split-level metrics (logged with `prefix`); `every='end'` evaluators score
the best checkpoint on `split` once training has ended.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from astrom3_jax.training import calibration_files, reports, tasks

EVERY = ("epoch", "end")
FIELDS = ("type", "split", "every", "prefix", "options")


def retrieval(config, outputs: Mapping, columns: Mapping, options) -> dict:
    """CLIP recall@k over the whole split, every other object a candidate (up
    to `config.full_retrieval_max` objects); {} without two modalities."""
    del columns, options
    if sum(m in outputs for m in config.model.modalities) < 2:
        return {}
    return tasks.clip_split_metrics(outputs, config)


def classification(config, outputs: Mapping, columns: Mapping, options) -> dict:
    """Balanced accuracy and macro F1 over the objects the classifier scores
    (a single-modality classifier leaves out objects without it)."""
    del options
    labels = columns.get("label")
    if labels is None or not len(labels) or "logits" not in outputs:
        return {}
    scored = np.asarray(outputs.get("scored", np.ones(len(labels)))) > 0
    if not scored.any():
        return {}
    names = [str(i) for i in range(config.model.num_classes)]
    rep = tasks.classification_report(labels[scored], outputs["logits"][scored], names)
    return {"balanced_accuracy": rep["balanced_accuracy"], "macro_f1": rep["macro_f1"]}


def report(config, workdir: str, sources, entry, build_fn=None) -> dict:
    """The classification report of the best checkpoint on the entry's split
    (options: `withhold` modalities absent for every object; `files`: also
    predictions.npz and confusion.png)."""
    options = entry.options
    return reports.classification_report(
        config,
        workdir,
        sources[entry.split],
        split=entry.split,
        withhold=tuple(options.get("withhold", ())),
        write_files=bool(options.get("files", True)),
        build_fn=build_fn,
    )


EPOCH_EVALUATORS: dict[str, Callable] = {
    "retrieval": retrieval,
    "classification": classification,
}


def calibrate(config, workdir: str, sources, entry, build_fn=None) -> dict:
    """Temperature (fitted on the entry's split, the validation split) and
    out-of-distribution statistics (the training split) of the best
    checkpoint, written for `predict` (calibration_files)."""
    del entry
    return calibration_files.calibrate(config, workdir, sources, build_fn=build_fn)


END_EVALUATORS: dict[str, Callable] = {"report": report, "calibrate": calibrate}
# Splits an end-of-run evaluator reads besides its entry's own.
END_EXTRA_SPLITS = {"calibrate": ("train",)}
# Per-epoch evaluators read the loop's validation pass.
EPOCH_PASS = ("epoch", "validation")
OPTIONS = {
    "retrieval": (),
    "classification": (),
    "report": ("withhold", "files"),
    "calibrate": (),
}


def entries(config, every: str) -> list[tuple[str, Mapping]]:
    """(name, entry) of the evaluations that run `every` ('epoch' | 'end')."""
    return [(n, e) for n, e in sorted(config.evals.items()) if e.every == every]


def run_epoch(config, outputs: Mapping, columns: Mapping) -> dict:
    """The per-epoch evaluators' metrics on a validation pass, prefixed."""
    out: dict = {}
    for _, e in entries(config, "epoch"):
        got = EPOCH_EVALUATORS[e.type](config, outputs, columns, e.options)
        out.update({f"{e.prefix}{k}": v for k, v in got.items()})
    return out


def run_end(config, workdir: str, sources: Mapping, build_fn=None) -> dict:
    """{name: report} of the end-of-run evaluators."""
    return {
        name: END_EVALUATORS[e.type](config, workdir, sources, e, build_fn)
        for name, e in entries(config, "end")
    }


def end_splits(config) -> list[str]:
    """The splits the end-of-run evaluators read."""
    out = set()
    for _, e in entries(config, "end"):
        out.update((e.split, *END_EXTRA_SPLITS.get(e.type, ())))
    return sorted(out)


def check(config) -> list[str]:
    """Problems with `config.evals` (empty when it is valid)."""
    evals = config.evals
    if not isinstance(evals, Mapping) and not hasattr(evals, "items"):
        return [
            "evals must map a name to {type, split, every, prefix, options}, e.g. "
            "{'val': {'type': 'retrieval', 'split': 'validation', 'every': "
            f"'epoch', 'prefix': 'val_', 'options': {{}}}}}}, got {evals!r}"
        ]
    out = []
    known = sorted({*EPOCH_EVALUATORS, *END_EVALUATORS})
    for name, e in sorted(evals.items()):
        where = f"evals.{name}"
        missing = [k for k in FIELDS if k not in e]
        if missing:
            out.append(f"{where}: missing {missing}")
            continue
        if e.type not in known:
            out.append(f"{where}.type: unknown {e.type!r}; known evaluators: {known}")
            continue
        if e.every not in EVERY:
            out.append(f"{where}.every must be one of {EVERY}, got {e.every!r}")
        elif e.type in EPOCH_EVALUATORS and (e.every, e.split) != EPOCH_PASS:
            out.append(
                f"{where}: {e.type!r} runs on each validation pass: every='epoch', "
                f"split='validation' (got every={e.every!r}, split={e.split!r})"
            )
        elif e.type in END_EVALUATORS and e.every != "end":
            out.append(f"{where}: {e.type!r} runs once training ends: every='end'")
        unknown = [k for k in e.options if k not in OPTIONS[e.type]]
        if unknown:
            out.append(
                f"{where}.options: unknown {unknown}; {e.type!r} takes "
                f"{list(OPTIONS[e.type]) or 'none'}"
            )
        model_names = tuple(config.model.modalities)
        held = [m for m in e.options.get("withhold", ()) if m not in model_names]
        if held:
            out.append(
                f"{where}.options.withhold: {held} are not modalities of the model "
                f"({list(model_names)})"
            )
        if e.type in ("report", "calibrate") and config.model.task != "classification":
            out.append(f"{where}: {e.type!r} needs a classifier (model.task)")
    return out
