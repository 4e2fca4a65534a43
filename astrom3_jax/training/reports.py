"""A classifier's report on a whole split after training, and the files it writes.

The end-of-run evaluator `report` (evaluators.py) calls `classification_report`:
the chosen checkpoint scored on every object of a split (the padded last
batch masked), optionally with modalities withheld for every object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from astrom3_jax import errors
from astrom3_jax.data import modalities, schema
from astrom3_jax.training import checkpoints, evaluation, tasks
from astrom3_jax.training import workdir as workdir_lib

EVAL_FILE = "eval.json"
PREDICTIONS_FILE = "predictions.npz"
CONFUSION_FILE = "confusion.png"


def eval_file(withhold: Sequence[str] = ()) -> str:
    """eval.json, or eval_without_<names>.json for a report with `withhold`."""
    return f"eval_without_{'_'.join(withhold)}.json" if withhold else EVAL_FILE


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


def predict(model, config, source, *, batch_size: int | None = None, withhold=()):
    """Logits, labels, ids and the loss of every object of `source`, in order;
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


def classification_report(
    config,
    workdir: str,
    source,
    *,
    split: str = "test",
    step="best",
    withhold: Sequence[str] = (),
    write_files: bool = True,
    build_fn: Callable | None = None,
) -> dict:
    """The `step` checkpoint scored on `source`; writes eval.json (or
    eval_without_<names>.json) and, with `write_files`, predictions.npz and
    confusion.png."""
    withhold = tuple(withhold)
    unknown = [m for m in withhold if m not in config.model.modalities]
    if unknown:
        raise errors.ConfigError(
            f"cannot withhold {unknown}: the model reads "
            f"{list(config.model.modalities)}"
        )
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
        split=split,
        step=int(resolved),
        dataset=config.dataset,
        loss=float(got.metrics["loss"]),
        left_out=int((~keep).sum()),
        withheld=list(withhold),
    )
    if jax.process_index() != 0:
        return report
    if write_files and not withhold:
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
        plot_confusion(
            report["confusion_matrix"],
            names,
            os.path.join(workdir, CONFUSION_FILE),
            title,
        )
    write_json(os.path.join(workdir, eval_file(withhold)), report)
    return report


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def plot_confusion(matrix, names, path, title) -> None:
    """The confusion matrix as a PNG, with counts in the cells."""
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


def write_json(path: str, data) -> None:
    """`data` as JSON at `path`, replaced atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
