"""Split-level metrics from the evaluation path's outputs, chosen by `config.evals`.

In the spirit of big_vision's `config.evals`: each evaluator is a small
host-side function `(config, outputs, columns) -> {metric: value}` over the
per-row outputs of a whole split (every object once, in split order; see
evaluation.py). The same functions run for validation during training and
for the test split after it, so a metric means the same thing in both.

- `retrieval`: CLIP recall@k over the whole split, every other object a
  candidate (objects lacking a modality take no part in its pairs), up to
  `config.full_retrieval_max` objects.
- `classification`: balanced accuracy and macro F1 over the split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from astrom3_jax.training import tasks

Evaluator = Callable[[object, Mapping, Mapping], dict]


def retrieval(config, outputs: Mapping, columns: Mapping) -> dict:
    """Needs the embeddings of two or more modalities ({} without them, e.g.
    on a classifier's outputs)."""
    del columns
    if sum(m in outputs for m in config.model.modalities) < 2:
        return {}
    return tasks.clip_split_metrics(outputs, config)


def classification(config, outputs: Mapping, columns: Mapping) -> dict:
    """Over the objects the classifier scores (a single-modality classifier
    leaves out objects without its modality: `scored` 0)."""
    labels = columns.get("label")
    if labels is None or not len(labels) or "logits" not in outputs:
        return {}
    scored = np.asarray(outputs.get("scored", np.ones(len(labels)))) > 0
    if not scored.any():
        return {}
    names = [str(i) for i in range(config.model.num_classes)]
    rep = tasks.classification_report(labels[scored], outputs["logits"][scored], names)
    return {"balanced_accuracy": rep["balanced_accuracy"], "macro_f1": rep["macro_f1"]}


EVALUATORS: dict[str, Evaluator] = {
    "retrieval": retrieval,
    "classification": classification,
}


def run(config, outputs: Mapping, columns: Mapping) -> dict:
    """Every evaluator `config.evals` names, merged into one dict."""
    out: dict = {}
    for name in config.evals:
        out.update(EVALUATORS[name](config, outputs, columns))
    return out


def check_names(names) -> list[str]:
    """Problems with `config.evals` (unknown evaluator names)."""
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        return [f"evals: unknown {unknown}; known evaluators: {sorted(EVALUATORS)}"]
    return []
