r"""Export embeddings of a data set as NumPy files, for analyses without JAX.

  python -m astrom3_jax.export_embeddings --workdir runs/clip_cpu \
      --dataset synthetic_small --splits train,validation,test,unseen \
      --out exports/clip_cpu [--step best] [--batch_size 256] [--overwrite]

--workdir is any workdir this project writes (pre-training, fine-tuning,
imported published weights), a published-weights folder or a Hugging Face
Hub model id. --out gets one folder per split (`<modality>.npy`, `fused.npy`,
`logits.npy` for classifiers, `index.npz`) plus `manifest.json`, which load
with NumPy alone (`analysis.store.load_split`; layout in docs/design.md).
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import jax
import numpy as np
from absl import flags

from astrom3_jax import api, cli, errors, models
from astrom3_jax.analysis import store
from astrom3_jax.data import datasets, schema
from astrom3_jax.training import evaluation

INDEX_FIELDS = ("id", "name")
TRUTH_FIELDS = ("true_target", "subtype")


def _available_fields(source) -> tuple[str, ...]:
    first = source[0]
    return tuple(f for f in (*INDEX_FIELDS, *TRUTH_FIELDS) if f in first)


def _text(values) -> np.ndarray:
    return np.asarray(
        [v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=str
    )


def export_split(
    predictor, source, config, batch_size: int, writer, *, progress=True
) -> int:
    """Every object of `source` through the model, in order, each batch's
    rows added to `writer` (a store.SplitWriter; None on the processes
    other than the first, which write nothing) as soon as it is fetched, so
    that one batch is held at a time. Returns the number of objects."""
    fields = ("label", *_available_fields(source))
    whole = None
    if jax.process_count() > 1:  # each process sees only its own rows
        whole = evaluation.index_from_source(source, fields)
    done = 0

    def sink(outputs, columns):
        nonlocal done
        n = len(next(iter(outputs.values())))
        if whole is not None:
            columns = {k: v[done : done + n] for k, v in whole.items()}
        if writer is not None:
            writer.add(**_chunk(outputs, columns, config.model.modalities, done))
        done += n

    predictor.run(
        source,
        batch_size=batch_size,
        modalities=config.model.modalities,
        seq_len=config.seq_len,
        host_fields=fields,
        progress=progress,
        sink=sink,
    )
    return done


def _chunk(outputs: dict, columns: dict, modalities, start: int) -> dict:
    """save_split's arguments for one batch of rows, the first of which is
    row `start` of the split: presence flags move to the index, ids and
    names become text (row numbers where the data set has no id)."""
    outputs, columns = dict(outputs), dict(columns)
    logits = outputs.pop("logits", None)
    for name in modalities:  # objects lacking a modality
        flags = outputs.pop(store.presence_column(name), None)
        if flags is not None:
            columns[store.presence_column(name)] = np.asarray(flags) > 0
    index = {
        k: v if v.dtype == bool else _text(v)
        for k, v in columns.items()
        if k != "label"
    }
    n = len(columns["label"])
    index.setdefault("id", np.asarray([str(i) for i in range(start, start + n)]))
    index.setdefault("name", index["id"])
    index["label"] = columns["label"].astype(np.int64)
    return dict(embeddings=outputs, index=index, logits=logits)


def export(
    workdir: str,
    dataset: str,
    splits,
    out: str,
    *,
    step=None,
    batch_size: int = 256,
    data_dir: str | None = None,
    overwrite: bool = False,
    seed: int = 0,
    sources=None,
    progress: bool = True,
    random_init: bool = False,
) -> str:
    """Export `splits` of `dataset` embedded by the model of `workdir` to `out`.

    `random_init=True` embeds with a freshly initialised model of the same
    shape instead (initialised from `seed`; evaluated with the run's key):
    the control that says how much of an analysis' score is the
    architecture and the data rather than training.
    `sources` ({split: random-access source}) replaces the TFDS data set
    (tests, notebooks). Returns `out`.

    The export runs the one evaluation path (training/evaluation.py):
    data-parallel over every device (and host), every object exactly once,
    in split order (the padded rows of the last batch are dropped). The
    ProbSparse key sample is drawn from the model's run seed by the
    evaluation key rule, so exporting a checkpoint reproduces the embeddings
    its validation pass saw, and `model.embed` gives the same rows. Only
    process 0 writes. Single-modality classifiers have no projection: their
    "embedding" is the L2-normalised encoder output. Objects lacking a
    modality are all exported: the index records `<modality>_present` per
    object, the absent rows of `<modality>.npy` are NaN and `fused` is the
    mean of what the object has. Each batch's rows are written as they are
    fetched (store.SplitWriter): memory holds a batch, not the split.
    """
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise errors.UserError(
            f"{out} exists and is not empty; choose another --out or pass --overwrite"
        )
    model, config = api.load_model(workdir, step=step)
    if random_init:
        model = models.init_model(config.model, seed=seed)
        models.set_eval_seed(model, config.seed)
        model.eval()
    if sources is None:
        have = datasets.split_names(dataset, data_dir)
        missing = [s for s in splits if s not in have]
        if missing:
            raise errors.UserError(
                f"data set {dataset} has no split(s) {missing}; it has {have}"
            )
        sources = datasets.open_sources(dataset, splits, data_dir)
    predictor = evaluation.Predictor(model, seed=config.seed)
    written = []
    for split in splits:
        first = jax.process_index() == 0
        with store.SplitWriter(out, split) if first else nullcontext() as writer:
            export_split(
                predictor, sources[split], config, batch_size, writer,
                progress=progress,
            )  # fmt: skip
        written.append(split)
    if jax.process_index() == 0:
        store.write_manifest(
            out,
            source=str(workdir),
            step=str(step) if step is not None else "best",
            dataset=dataset,
            splits=written,
            modalities=list(config.model.modalities),
            class_names=list(schema.CLASSES),
            embed_dim=int(config.model.embed_dim),
            model_task=config.model.task,
            seed=seed,
            random_init=random_init,
        )
    return out


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string(
        "workdir", None, "Workdir, published-weights folder or Hub model id."
    )
    flags.DEFINE_string("dataset", None, "Data set config, e.g. synthetic_small.")
    flags.DEFINE_string("splits", "train,validation,test", "Splits, comma-separated.")
    flags.DEFINE_string("out", None, "Output folder.")
    flags.DEFINE_string("step", None, "'best' (default), 'latest' or a step number.")
    flags.DEFINE_integer("batch_size", 256, "Global batch size.")
    flags.DEFINE_string("data_dir", "", "TFDS data_dir ('' = the TFDS default).")
    flags.DEFINE_bool("overwrite", False, "Write into a non-empty --out.")
    flags.DEFINE_integer("seed", 0, "Seed of the fresh model of --random_init.")
    flags.DEFINE_bool(
        "random_init",
        False,
        "Embed with a freshly initialised model of the workdir's shape (a control).",
    )
    flags.mark_flags_as_required(["workdir", "dataset", "out"])


def main(argv):
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    step = FLAGS.step  # parsed where it is used (checkpoints.parse_step)
    out = export(
        FLAGS.workdir,
        FLAGS.dataset,
        [s for s in FLAGS.splits.split(",") if s],
        FLAGS.out,
        step=step,
        batch_size=FLAGS.batch_size,
        data_dir=FLAGS.data_dir or None,
        overwrite=FLAGS.overwrite,
        seed=FLAGS.seed,
        random_init=FLAGS.random_init,
    )
    print(f"wrote embeddings to {out}")


if __name__ == "__main__":
    define_flags()
    cli.main(main)
