"""What pre-training and fine-tuning do differently; the loop does the rest.

A `Task` is a handful of functions in the style of scenic's injected
`loss_fn`/`metrics_fn`:
- `loss_fn(model, batch, rngs, axis_name) -> (loss, metrics)`: per-device;
  `loss` must already be reduced over the mesh axis (a global mean), so its
  gradient inside `shard_map` is the global gradient.
- `eval_fn(model, batch, rngs, axis_name) -> (metrics, outputs)`: metrics
  are means over the real rows of the global batch (`mask`), outputs are
  per-row arrays kept for `split_metrics`.
- `split_metrics(outputs, config) -> dict`: metrics over a whole split from
  the real rows' outputs in split order (host NumPy).
- `init_from(model, source_model)`: copy what the new model shares with a
  pre-trained one (new heads stay fresh).
- `trainable(config)`: an NNX filter of the parameters that train.
- `best_metric`: the validation metric (maximised) that picks the best
  checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from astrom3_jax import models
from astrom3_jax.data.modalities import PRESENT_SUFFIX
from astrom3_jax.training import losses

# Batch fields that are targets or bookkeeping, never model inputs.
NON_INPUT_KEYS = ("label", "mask", "id", "name")

FREEZE_CHOICES = ("", "none", "encoders")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    loss_fn: Callable
    eval_fn: Callable
    split_metrics: Callable
    init_from: Callable
    trainable: Callable = lambda config: nnx.Param
    best_metric: str = "val_accuracy"


def model_inputs(batch: Mapping) -> dict:
    """The model's input arrays: no targets, bookkeeping or presence flags."""
    return {
        k: v
        for k, v in batch.items()
        if k not in NON_INPUT_KEYS and not k.endswith(PRESENT_SUFFIX)
    }


def _row_mask(batch, n):
    mask = batch.get("mask")
    return jnp.ones((n,), jnp.float32) if mask is None else mask.astype(jnp.float32)


def _global_mean(values, row_mask, axis_name):
    num, den = jnp.sum(values * row_mask), jnp.sum(row_mask)
    if axis_name is not None:
        num, den = jax.lax.psum(num, axis_name), jax.lax.psum(den, axis_name)
    return num / jnp.maximum(den, 1.0)


def _copy_all_params(model, source, what: str) -> None:
    models.copy_params(model, source, what)


# ------------------------------------------------------------------ CLIP


def _scales(model) -> dict:
    return {pair: model.logit_scale(*pair) for pair in model.pairs}


def _clip_loss(model, batch, rngs, axis_name):
    emb = model(model_inputs(batch), rngs=rngs)
    pair = losses.pair_losses(emb, _scales(model), axis_name=axis_name)
    return sum(pair.values()), {f"loss/{a}-{b}": v for (a, b), v in pair.items()}


def _clip_eval(model, batch, rngs, axis_name):
    emb = model(model_inputs(batch), rngs=rngs)
    metrics = losses.clip_metrics(
        emb, _scales(model), axis_name=axis_name, mask=batch["mask"]
    )
    return metrics, emb


_full_set_metrics = jax.jit(losses.clip_metrics)


def _clip_split_metrics(outputs: Mapping[str, np.ndarray], config) -> dict:
    """Retrieval recall over the whole split (every other object a candidate)."""
    n = len(next(iter(outputs.values()))) if outputs else 0
    if not n or n > config.get("full_retrieval_max", 20000):
        return {}
    names = list(config.model.modalities)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    # Ranks do not depend on the temperature: scale 1.
    m = _full_set_metrics(dict(outputs), {p: jnp.float32(1.0) for p in pairs})
    return {f"full_{k}": float(v) for k, v in m.items() if "recall" in k}


def _clip_init_from(model, source) -> None:
    if not isinstance(source, models.AstroM3):
        raise ValueError(
            f"init_from for pre-training needs a CLIP model, got a "
            f"{type(source).__name__}"
        )
    _copy_all_params(model, source, "CLIP model")


def clip_task() -> Task:
    """AstroM3 pre-training: symmetric InfoNCE over every modality pair."""
    return Task(
        name="clip",
        loss_fn=_clip_loss,
        eval_fn=_clip_eval,
        split_metrics=_clip_split_metrics,
        init_from=_clip_init_from,
    )


# -------------------------------------------------------- classification


def _cross_entropy(logits, labels):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _classify(model, batch, rngs, axis_name):
    logits = model(model_inputs(batch), rngs=rngs)
    labels = batch["label"]
    row_mask = _row_mask(batch, labels.shape[0])
    loss = _global_mean(_cross_entropy(logits, labels), row_mask, axis_name)
    hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    acc = _global_mean(hit, row_mask, axis_name)
    return logits, loss, acc


def _classification_loss(model, batch, rngs, axis_name):
    _, loss, acc = _classify(model, batch, rngs, axis_name)
    return loss, {"accuracy": acc}


def _classification_eval(model, batch, rngs, axis_name):
    logits, loss, acc = _classify(model, batch, rngs, axis_name)
    return {"loss": loss, "accuracy": acc}, {"logits": logits, "label": batch["label"]}


def classification_report(labels, logits, class_names) -> dict:
    """Accuracy, balanced accuracy, macro F1, per-class scores, confusion."""
    from sklearn import metrics

    labels = np.asarray(labels)
    pred = np.argmax(np.asarray(logits), axis=-1)
    ids = list(range(len(class_names)))
    p, r, f, support = metrics.precision_recall_fscore_support(
        labels, pred, labels=ids, zero_division=0
    )
    present = support > 0
    return {
        "count": int(len(labels)),
        "accuracy": float(np.mean(pred == labels)) if len(labels) else 0.0,
        # Over the classes present in this split (absent classes have no recall).
        "balanced_accuracy": float(np.mean(r[present])) if present.any() else 0.0,
        "macro_f1": float(np.mean(f[present])) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": metrics.confusion_matrix(labels, pred, labels=ids).tolist(),
        "class_names": list(class_names),
    }


def _classification_split_metrics(outputs, config) -> dict:
    if not outputs or not len(outputs["label"]):
        return {}
    names = [str(i) for i in range(config.model.num_classes)]
    rep = classification_report(outputs["label"], outputs["logits"], names)
    return {"balanced_accuracy": rep["balanced_accuracy"], "macro_f1": rep["macro_f1"]}


def _classification_init_from(model, source) -> None:
    if not isinstance(source, models.AstroM3):
        raise ValueError(
            "init_from must hold a CLIP pre-training model (a pre-training workdir, "
            f"imported AstroM3-CLIP weights); got a {type(source).__name__}"
        )
    models.init_from_clip(model, source)


def _classification_trainable(config):
    freeze = config.get("freeze", "") or "none"
    if freeze not in ("none", "encoders"):
        raise ValueError(
            f"config.freeze must be '' / 'none' or 'encoders', got {freeze!r}"
        )
    if freeze == "encoders":  # a linear probe: only the classification head trains
        return nnx.All(nnx.Param, nnx.PathContains("fc"))
    return nnx.Param


def classification_task() -> Task:
    """Fine-tuning: cross-entropy on the class labels, best by val accuracy."""
    return Task(
        name="classification",
        loss_fn=_classification_loss,
        eval_fn=_classification_eval,
        split_metrics=_classification_split_metrics,
        init_from=_classification_init_from,
        trainable=_classification_trainable,
    )


def for_config(config) -> Task:
    """The task that `config.model.task` names."""
    kind = config.model.get("task", "clip")
    if kind == "clip":
        return clip_task()
    if kind == "classification":
        return classification_task()
    raise ValueError(
        f"config.model.task must be 'clip' or 'classification', got {kind!r}"
    )
