"""What pre-training and fine-tuning do differently; the loop does the rest.

`clip_task` and `classification_task` build a `Task`; `for_config` picks
the one `config.model.task` names.
"""

from __future__ import annotations

import dataclasses
import functools
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
    """A handful of functions, like scenic's injected `loss_fn`/`metrics_fn`.

    - `loss_fn(model, batch, rngs, axis_name) -> (loss, metrics)`: per-device;
      `loss` must already be reduced over the mesh axis (a global mean), so
      its gradient inside `shard_map` is the global gradient.
    - `eval_fn(model, batch, rngs, axis_name) -> (metrics, outputs)`: metrics
      are means over the real rows of the global batch (`mask`), outputs
      per-row arrays; evaluation.py runs it over a split and the config's
      evaluators (evaluators.py) turn the outputs into split-level metrics.
    - `init_from(model, source_model)`: copy what the new model shares with
      a pre-trained one (new heads stay fresh).
    - `trainable(config)`: an NNX filter of the parameters that train.
    - `best_metric`: the validation metric (maximised) that picks the best
      checkpoint.
    """

    name: str
    loss_fn: Callable
    eval_fn: Callable
    init_from: Callable
    trainable: Callable = lambda config: nnx.Param
    best_metric: str = "val_accuracy"


def model_inputs(batch: Mapping) -> dict:
    """The model's inputs: the batch without targets and bookkeeping (presence
    flags stay: a fused classifier averages only what an object has)."""
    return {k: v for k, v in batch.items() if k not in NON_INPUT_KEYS}


def _row_mask(batch, n):
    mask = batch.get("mask")
    return jnp.ones((n,), jnp.float32) if mask is None else mask.astype(jnp.float32)


def _copy_all_params(model, source, what: str) -> None:
    models.copy_params(model, source, what)


# ------------------------------------------------------------------ CLIP


def _scales(model) -> dict:
    return {pair: model.logit_scale(*pair) for pair in model.pairs}


def _clip_presence(batch, names) -> dict:
    """{modality: presence flags} for the modalities whose flags the batch
    carries; empty (everything present) for a complete data set."""
    return {m: batch[m + PRESENT_SUFFIX] for m in names if m + PRESENT_SUFFIX in batch}


def _clip_loss(model, batch, rngs, axis_name):
    emb = model(model_inputs(batch), rngs=rngs)
    loss, pair = losses.clip_loss_and_pairs(
        emb, _scales(model), axis_name=axis_name, presence=_clip_presence(batch, emb)
    )
    return loss, {f"loss/{a}-{b}": v for (a, b), v in pair.items()}


def _clip_eval(model, batch, rngs, axis_name):
    """Batch metrics over present rows; outputs: the embeddings, plus the
    batch's presence flags (under their batch keys) for `clip_split_metrics`."""
    emb = model(model_inputs(batch), rngs=rngs)
    presence = _clip_presence(batch, emb)
    metrics = losses.clip_metrics(
        emb, _scales(model), axis_name=axis_name, mask=batch["mask"], presence=presence
    )
    return metrics, {**emb, **{m + PRESENT_SUFFIX: v for m, v in presence.items()}}


_full_set_metrics = jax.jit(losses.clip_metrics)


def clip_split_metrics(outputs: Mapping[str, np.ndarray], config) -> dict:
    """Retrieval recall over the whole split (every other object a candidate;
    with presence flags, every object that has both modalities of a pair)."""
    n = len(next(iter(outputs.values()))) if outputs else 0
    if not n or n > config.full_retrieval_max:
        return {}
    names = list(config.model.modalities)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    emb = {k: np.asarray(v) for k, v in outputs.items() if k in names}
    presence = _clip_presence(outputs, names) or None
    # Ranks do not depend on the temperature: scale 1.
    scales = {p: jnp.float32(1.0) for p in pairs}
    m = _full_set_metrics(emb, scales, presence=presence)
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
        init_from=_clip_init_from,
    )


# -------------------------------------------------------- classification


def drop_modalities(batch, names, p: float, key) -> dict:
    """`batch` with each modality of each row dropped (its presence flag set
    to 0) with probability `p`, never all of a row's present modalities: a
    row that would lose them all keeps the one with the largest draw."""
    n = batch["label"].shape[0]
    present = jnp.stack(
        [
            batch.get(m + PRESENT_SUFFIX, jnp.ones((n,), jnp.float32)).astype(
                jnp.float32
            )
            for m in names
        ],
        axis=1,
    )
    u = jax.random.uniform(key, present.shape)
    keep = present * (u >= p)
    best = jnp.argmax(jnp.where(present > 0, u, -1.0), axis=1)
    rescue = jax.nn.one_hot(best, len(names), dtype=jnp.float32) * present
    keep = jnp.where(jnp.sum(keep, axis=1, keepdims=True) > 0, keep, rescue)
    out = dict(batch)
    for i, m in enumerate(names):
        out[m + PRESENT_SUFFIX] = keep[:, i]
    return out


def _classify(model, batch, rngs, axis_name):
    logits = model(model_inputs(batch), rngs=rngs)
    labels = batch["label"]
    row_mask = _row_mask(batch, labels.shape[0])
    names = tuple(getattr(model, "modality_names", ()))
    if len(names) == 1 and names[0] + PRESENT_SUFFIX in batch:
        # A single-modality classifier leaves out objects without it.
        row_mask = row_mask * batch[names[0] + PRESENT_SUFFIX].astype(jnp.float32)
    ce = losses.cross_entropy(logits, labels)
    loss = losses.masked_mean(ce, row_mask, axis_name)
    hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    acc = losses.masked_mean(hit, row_mask, axis_name)
    return logits, loss, acc, row_mask


def _classification_loss(model, batch, rngs, axis_name, *, modality_dropout=0.0):
    if modality_dropout > 0 and len(getattr(model, "modality_names", ())) > 1:
        key = rngs["dropout"]()
        batch = drop_modalities(batch, model.modality_names, modality_dropout, key)
    _, loss, acc, _ = _classify(model, batch, rngs, axis_name)
    return loss, {"accuracy": acc}


def _classification_eval(model, batch, rngs, axis_name):
    logits, loss, acc, rows = _classify(model, batch, rngs, axis_name)
    return {"loss": loss, "accuracy": acc}, {"logits": logits, "scored": rows}


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


def _classification_init_from(model, source) -> None:
    if not isinstance(source, models.AstroM3):
        raise ValueError(
            "init_from must hold a CLIP pre-training model (a pre-training workdir, "
            f"imported AstroM3-CLIP weights); got a {type(source).__name__}"
        )
    models.init_from_clip(model, source)


def _classification_trainable(config):
    if config.freeze not in FREEZE_CHOICES:
        raise ValueError(f"config.freeze must be one of {FREEZE_CHOICES}")
    if (
        config.freeze == "encoders"
    ):  # a linear probe: only the classification head trains
        return nnx.All(nnx.Param, nnx.PathContains("fc"))
    return nnx.Param


def classification_task(modality_dropout: float = 0.0) -> Task:
    """Fine-tuning: cross-entropy on the class labels, best by val accuracy.

    `modality_dropout` drops each modality of a training object with that
    probability (never all of them; see drop_modalities).
    """
    loss_fn = _classification_loss
    if modality_dropout > 0:
        loss_fn = functools.partial(loss_fn, modality_dropout=modality_dropout)
    return Task(
        name="classification",
        loss_fn=loss_fn,
        eval_fn=_classification_eval,
        init_from=_classification_init_from,
        trainable=_classification_trainable,
    )


def for_config(config) -> Task:
    """The task that `config.model.task` names."""
    kind = config.model.task
    if kind == "clip":
        return clip_task()
    if kind == "classification":
        return classification_task(config.modality_dropout)
    raise ValueError(
        f"config.model.task must be 'clip' or 'classification', got {kind!r}"
    )
