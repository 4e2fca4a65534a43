"""AstroM3 fine-tuning: `finetune_and_evaluate(config, workdir)`.

The same loop as pre-training (training/loop.py) with the classification
task: resume from the workdir, else start from `config.init_from` (a CLIP
pre-training: single-modality classifiers take that modality's encoder,
`all` takes encoders, projections and temperatures; the head is new), else
from scratch. Afterwards the best checkpoint (by validation accuracy) is
scored on the test split, every object counted (the padded last batch is
masked), and the workdir receives:
  eval.json         accuracy, balanced accuracy, macro F1, per-class
                    precision/recall/F1, the confusion matrix
  predictions.npz   id, label, logits, pred (test split order)
  confusion.png     the confusion matrix
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping

import jax
import ml_collections
import numpy as np
from flax import nnx

from astrom3_jax import errors
from astrom3_jax.data import names, schema
from astrom3_jax.training import checkpoints, loop, sharding, tasks

EVAL_FILE = "eval.json"
PREDICTIONS_FILE = "predictions.npz"
CONFUSION_FILE = "confusion.png"


def check_finetune_config(config) -> None:
    """The data set must be the subset the hyperparameters were chosen for."""
    if config.model.get("task") != "classification":
        raise errors.ConfigError(
            "fine-tuning needs config.model.task='classification' "
            "(use configs/finetune.py)"
        )
    subset = config.get("subset")
    try:
        actual = names.subset_of(config.dataset)
    except ValueError:
        return  # unknown names are reported by validate.check_config
    if subset and actual != subset:
        raise errors.ConfigError(
            f"config.dataset={config.dataset!r} is subset {actual!r}, but the config "
            f"was made for subset {subset!r}; pick the data set with the same subset "
            f"(e.g. {subset}_<seed>) or make the config for {actual!r}"
        )
    if config.get("pretrained") and not config.get("init_from"):
        raise errors.ConfigError(
            "a `clip` fine-tuning config needs --config.init_from=<pre-training "
            "workdir, imported-weights workdir or Hub id such as "
            "AstroMLCore/AstroM3-CLIP-42>"
        )


def finetune_sources(config) -> dict:
    from astrom3_jax.data import datasets

    return datasets.open_sources(
        config.dataset, ("train", "validation", "test"), config.data_dir or None
    )


def _ids(source) -> np.ndarray:
    """Object ids in source order (row numbers when the source has none)."""
    out = []
    for i in range(len(source)):
        example = source[i]
        v = example.get("id", str(i)) if hasattr(example, "get") else str(i)
        out.append(v.decode() if isinstance(v, bytes) else str(v))
    return np.asarray(out)


def predict(model, config, source, *, batch_size: int | None = None) -> dict:
    """Logits and labels of every object of `source`, data-parallel, in order."""
    from astrom3_jax.data import pipeline

    mesh = sharding.make_mesh()
    batch_size = batch_size or config.get("test_batch_size", config.eval_batch_size)
    sharding.check_batch_size(batch_size, mesh)
    batches = pipeline.make_eval_batches(
        source,
        batch_size=batch_size,
        modalities=tuple(config.model.modalities),
        seq_len=config.seq_len,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )
    parts = loop.split_model(model, nnx.Param)
    task = tasks.classification_task()
    with jax.set_mesh(mesh):
        step = loop.make_eval_step(parts.eval_def, mesh, task)
        state = sharding.replicate((parts.params, parts.frozen, parts.rest), mesh)
        key = sharding.replicate(
            jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1), mesh
        )
        metrics, outputs = loop.evaluate(step, state, batches, mesh, key)
    return {"metrics": metrics, **outputs}


def _plot_confusion(matrix, names, path, title) -> None:
    # A Figure with its own Agg canvas: no pyplot, so a notebook's backend
    # is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix)
    fig = Figure(figsize=(6.5, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                color = "white" if m[i, j] > m.max() / 2 else "black"
                ax.text(j, i, str(m[i, j]), ha="center", va="center", color=color)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def evaluate_test(
    config, workdir: str, source, *, step="best", build_fn: Callable | None = None
) -> dict:
    """Score the `step` checkpoint on `source`; write eval.json & co."""
    model, _ = checkpoints.restore_model(workdir, step, build_fn=build_fn)
    with checkpoints.make_manager(workdir) as manager:
        resolved = checkpoints.resolve_step(manager, step)
    out = predict(model, config, source)
    names = list(schema.CLASSES)[: config.model.num_classes]
    report = tasks.classification_report(out["label"], out["logits"], names)
    report.update(
        split="test",
        step=int(resolved),
        dataset=config.dataset,
        loss=float(out["metrics"]["loss"]),
    )
    if jax.process_index() == 0:
        ids = _ids(source)
        np.savez(
            os.path.join(workdir, PREDICTIONS_FILE),
            id=ids,
            label=out["label"].astype(np.int64),
            logits=out["logits"].astype(np.float32),
            pred=np.argmax(out["logits"], axis=-1).astype(np.int64),
            class_names=np.asarray(names),
        )
        title = f"{config.get('mode', '')} {config.dataset}: accuracy "
        title += f"{report['accuracy']:.3f} (step {resolved})"
        _plot_confusion(
            report["confusion_matrix"],
            names,
            os.path.join(workdir, CONFUSION_FILE),
            title,
        )
        tmp = os.path.join(workdir, EVAL_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, os.path.join(workdir, EVAL_FILE))
    return report


def finetune_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    sources: Mapping | None = None,
    build_fn: Callable | None = None,
    before_training: Callable[[], None] | None = None,
) -> dict:
    """Fine-tune (or resume) in `workdir`, then score the best checkpoint on
    the test split. Returns the eval.json report.

    `sources` ({'train', 'validation', 'test'} random-access sources)
    replaces the TFDS data set (tests, notebooks).
    """
    from astrom3_jax.training import validate

    # Config mistakes and a workdir of another run fail before data is read.
    validate.check_config(config)
    check_finetune_config(config)
    checkpoints.check_config(workdir, config)
    sources = sources if sources is not None else finetune_sources(config)
    outcome = loop.train(
        config,
        workdir,
        tasks.classification_task(),
        sources,
        build_fn=build_fn,
        before_training=before_training,
    )
    loop.say(loop.describe(outcome, tasks.classification_task()))
    report = evaluate_test(config, workdir, sources["test"], build_fn=build_fn)
    loop.say(
        f"test: accuracy={report['accuracy']:.4f}, balanced accuracy="
        f"{report['balanced_accuracy']:.4f}, macro F1={report['macro_f1']:.4f} "
        f"over {report['count']} objects; wrote {os.path.join(workdir, EVAL_FILE)}"
    )
    return report
