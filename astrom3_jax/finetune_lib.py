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
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from astrom3_jax import errors
from astrom3_jax.data import modalities, names, schema
from astrom3_jax.training import checkpoints, evaluation, init_from, loop, tasks
from astrom3_jax.training import workdir as workdir_lib

EVAL_FILE = "eval.json"
PREDICTIONS_FILE = "predictions.npz"
CONFUSION_FILE = "confusion.png"


def check_finetune_config(config) -> None:
    """The data set must be the subset the hyperparameters were chosen for."""
    if config.model.task != "classification":
        raise errors.ConfigError(
            "fine-tuning needs config.model.task='classification' "
            "(use configs/finetune.py)"
        )
    subset = config.subset
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
    if config.pretrained and not config.init_from:
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


def withholding(outputs_fn, withhold: Sequence[str]):
    """`outputs_fn` on batches whose `withhold` modalities are flagged absent
    for every object (e.g. a fused classifier scored without spectra)."""
    if not withhold:
        return outputs_fn

    def wrapped(model, batch, rngs, axis_name):
        batch = dict(batch)
        for name in withhold:
            batch[modalities.presence_key(name)] = jnp.zeros_like(batch["mask"])
        return outputs_fn(model, batch, rngs, axis_name)

    return wrapped


def withheld_eval_file(withhold: Sequence[str]) -> str:
    return f"eval_without_{'_'.join(withhold)}.json" if withhold else EVAL_FILE


def predict(model, config, source, *, batch_size: int | None = None, withhold=()):
    """Logits, labels, ids and the loss of every object of `source`, in order
    (the one evaluation path with the classification task's outputs);
    `withhold` modalities are flagged absent for every object."""
    outputs_fn = withholding(tasks.classification_task().eval_fn, withhold)
    predictor = evaluation.Predictor(model, seed=config.seed, outputs_fn=outputs_fn)
    got = predictor.run(
        source,
        batch_size=batch_size or config.test_batch_size or config.eval_batch_size,
        modalities=config.model.modalities,
        seq_len=config.seq_len,
        host_fields=("label", "id"),
    )
    if jax.process_count() > 1:
        got.columns = evaluation.index_from_source(source, ("label", "id"))
    return got


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


def evaluate_withheld(config, workdir: str, withhold: Sequence[str]) -> dict:
    """The best checkpoint on the test split with `withhold` modalities
    absent for every object; writes eval_without_<names>.json."""
    unknown = [m for m in withhold if m not in config.model.modalities]
    if unknown:
        raise errors.ConfigError(
            f"cannot withhold {unknown}: the model reads "
            f"{list(config.model.modalities)}"
        )
    source = finetune_sources(config)["test"]
    return evaluate_test(config, workdir, source, withhold=tuple(withhold))


def evaluate_test(
    config,
    workdir: str,
    source,
    *,
    step="best",
    build_fn: Callable | None = None,
    withhold: tuple[str, ...] = (),
) -> dict:
    """Score the `step` checkpoint on `source`; write eval.json & co (with
    `withhold`: only eval_without_<names>.json)."""
    model, _ = workdir_lib.restore_model(workdir, step, build_fn=build_fn)
    with checkpoints.make_manager(workdir) as manager:
        resolved = checkpoints.resolve_step(manager, step)
    got = predict(model, config, source, withhold=withhold)
    scored = np.asarray(got.outputs.get("scored", np.ones(len(got.columns["label"]))))
    keep = scored > 0  # a single-modality classifier leaves out objects without it
    labels, logits = got.columns["label"][keep], got.outputs["logits"][keep]
    names = list(schema.CLASSES)[: config.model.num_classes]
    report = tasks.classification_report(labels, logits, names)
    report.update(
        split="test",
        step=int(resolved),
        dataset=config.dataset,
        loss=float(got.metrics["loss"]),
        left_out=int((~keep).sum()),
        withheld=list(withhold),
    )
    if withhold:
        if jax.process_index() == 0:
            _write_json(os.path.join(workdir, withheld_eval_file(withhold)), report)
        return report
    if jax.process_index() == 0:
        ids = got.columns.get("id", np.arange(len(keep)).astype(str))[keep]
        np.savez(
            os.path.join(workdir, PREDICTIONS_FILE),
            id=np.asarray([_text(v) for v in ids]),
            label=labels.astype(np.int64),
            logits=logits.astype(np.float32),
            pred=np.argmax(logits, axis=-1).astype(np.int64),
            class_names=np.asarray(names),
        )
        title = f"{config.mode} {config.dataset}: accuracy "
        title += f"{report['accuracy']:.3f} (step {resolved})"
        _plot_confusion(
            report["confusion_matrix"],
            names,
            os.path.join(workdir, CONFUSION_FILE),
            title,
        )
        _write_json(os.path.join(workdir, EVAL_FILE), report)
    return report


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


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
    init_from.take_architecture(config, say=loop.say)
    validate.check_config(config)
    checkpoints.check_config(workdir, config)
    if sources is None:
        from astrom3_jax.data import datasets

        sources = finetune_sources(config)
        datasets.record_stats(config.dataset, config.data_dir or None, workdir)
    outcome = loop.train(
        config,
        workdir,
        # The config's task: its modality_dropout reaches the training loss.
        tasks.for_config(config),
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
