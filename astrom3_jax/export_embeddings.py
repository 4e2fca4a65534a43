r"""Export embeddings of a data set as NumPy files, for analyses without JAX.

  python -m astrom3_jax.export_embeddings --workdir runs/clip_cpu \
      --dataset synthetic_small --splits train,validation,test,unseen \
      --out exports/clip_cpu [--step best] [--batch_size 256] [--overwrite]

--workdir is any workdir this project writes (pre-training, fine-tuning,
imported published weights), a published-weights folder or a Hugging Face
Hub model id. The layout of --out is described in
`astrom3_jax/analysis/store.py` (one folder per split: `<modality>.npy`,
`fused.npy`, `logits.npy` for classifiers, `index.npz`, plus
`manifest.json`); it loads with NumPy alone (`analysis.store.load_split`).

The jitted evaluation step runs data-parallel over every device (and host);
every object is exported exactly once, in split order (the padded rows of
the last batch are dropped); the ProbSparse key sample is drawn from
`--seed`, so an export is deterministic. Only process 0 writes.
Single-modality classifiers have no projection: their "embedding" is the
L2-normalised encoder output.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import flags

from astrom3_jax import cli, errors

INDEX_FIELDS = ("id", "name")
TRUTH_FIELDS = ("true_target", "subtype")


def _outputs_fn(model):
    """Per-device (model, batch, rngs) -> {modality: embedding, ['logits']}."""
    from astrom3_jax import models
    from astrom3_jax.models import clip as clip_lib
    from astrom3_jax.training.tasks import model_inputs

    def outputs(model, batch, rngs, axis_name):
        del axis_name
        inputs = model_inputs(batch)
        if isinstance(model, models.AstroM3):
            return {}, model(inputs, rngs=rngs)
        if isinstance(model, models.MultimodalClassifier):
            out = dict(model.clip(inputs, rngs=rngs))
            out["logits"] = model(inputs, rngs=rngs)
            return {}, out
        if isinstance(model, models.Classifier):
            args = clip_lib.gather_inputs(inputs, model.modality)
            feats = model.encoder(*args, rngs=rngs)
            return {}, {
                model.modality: clip_lib.l2_normalize(feats),
                "logits": model.fc(feats).astype(np.float32),
            }
        raise TypeError(f"cannot export embeddings of a {type(model).__name__}")

    return outputs


class Exporter:
    """A model compiled once for data-parallel embedding of batches."""

    def __init__(self, model, config, *, seed: int = 0):
        from flax import nnx

        from astrom3_jax.training import loop, sharding, tasks

        self.model, self.config = model, config
        self.mesh = sharding.make_mesh()
        parts = loop.split_model(model, nnx.Param)
        task = tasks.Task(
            name="export",
            loss_fn=None,
            eval_fn=_outputs_fn(model),
            split_metrics=None,
            init_from=None,
        )
        with jax.set_mesh(self.mesh):
            self.step = loop.make_eval_step(parts.eval_def, self.mesh, task)
            self.state = sharding.replicate(
                (parts.params, parts.frozen, parts.rest), self.mesh
            )
            self.key = sharding.replicate(jax.random.key(seed), self.mesh)

    def export_split(self, source, batch_size: int, *, progress: bool = True):
        """(outputs of the real rows, host-side index columns), in split order."""
        from tqdm import tqdm

        from astrom3_jax.data import pipeline
        from astrom3_jax.training import loop, sharding

        sharding.check_batch_size(batch_size, self.mesh)
        single = jax.process_count() == 1
        extra = _available_fields(source) if single else ()
        batches = pipeline.make_eval_batches(
            source,
            batch_size=batch_size,
            modalities=tuple(self.config.model.modalities),
            seq_len=self.config.seq_len,
            shard_index=jax.process_index(),
            shard_count=jax.process_count(),
            extra_fields=extra,
        )
        outs, index = [], {k: [] for k in ("label", *extra)}
        pending = None
        bar = tqdm(
            total=len(source),
            unit="obj",
            disable=not progress or jax.process_index() != 0,
        )

        def fetch(item):
            outputs, mask, host = item
            keep = sharding.to_host(mask) > 0
            outs.append({k: sharding.to_host(v)[keep] for k, v in outputs.items()})
            for k in index:
                index[k].append(np.asarray(host[k])[np.asarray(host["mask"]) > 0])
            bar.update(int(keep.sum()))

        with jax.set_mesh(self.mesh):
            for batch in batches:
                device = sharding.shard_batch(loop.device_fields(batch), self.mesh)
                _, outputs = self.step(*self.state, device, self.key)
                if pending is not None:  # fetch the previous batch while this runs
                    fetch(pending)
                pending = (outputs, device["mask"], batch)
            if pending is not None:
                fetch(pending)
        bar.close()
        result = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        columns = {k: np.concatenate(v) for k, v in index.items() if v}
        if not single:
            columns = _index_from_source(source)
        return result, columns


def _available_fields(source) -> tuple[str, ...]:
    first = source[0]
    return tuple(f for f in (*INDEX_FIELDS, *TRUTH_FIELDS) if f in first)


def _text(values) -> np.ndarray:
    return np.asarray(
        [v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=str
    )


def _index_from_source(source) -> dict:
    """Index columns read from the source itself (multi-host exports)."""
    fields = ("label", *_available_fields(source))
    rows = [source[i] for i in range(len(source))]
    return {f: np.asarray([r[f] for r in rows]) for f in fields}


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
    shape instead (seeded by `seed`): the control that says how much of an
    analysis' score is the architecture and the data rather than training.
    `sources` ({split: random-access source}) replaces the TFDS data set
    (tests, notebooks). Returns `out`.
    """
    from astrom3_jax import api
    from astrom3_jax.analysis import store
    from astrom3_jax.data import schema

    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise errors.UserError(
            f"{out} exists and is not empty; choose another --out or pass --overwrite"
        )
    model, config = api.load_model(workdir, step=step)
    if random_init:
        from astrom3_jax import models

        model = models.init_model(config.model, seed=seed)
        model.eval()
    if "seq_len" not in config:  # imported published weights: the reference's
        config.seq_len = config.model.photometry.seq_len
    if sources is None:
        from astrom3_jax.data import datasets

        have = datasets.split_names(dataset, data_dir)
        missing = [s for s in splits if s not in have]
        if missing:
            raise errors.UserError(
                f"data set {dataset} has no split(s) {missing}; it has {have}"
            )
        sources = datasets.open_sources(dataset, splits, data_dir)
    exporter = Exporter(model, config, seed=seed)
    written = []
    for split in splits:
        outputs, columns = exporter.export_split(
            sources[split], batch_size, progress=progress
        )
        logits = outputs.pop("logits", None)
        index = {k: _text(v) for k, v in columns.items() if k != "label"}
        n = len(columns["label"])
        index.setdefault("id", np.asarray([str(i) for i in range(n)]))
        index.setdefault("name", index["id"])
        index["label"] = columns["label"].astype(np.int64)
        if jax.process_index() == 0:
            store.save_split(out, split, embeddings=outputs, index=index, logits=logits)
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
            model_task=config.model.get("task", "clip"),
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
    flags.DEFINE_integer(
        "seed", 0, "Seed of the ProbSparse key sample (and of --random_init)."
    )
    flags.DEFINE_bool(
        "random_init",
        False,
        "Embed with a freshly initialised model of the workdir's shape (a control).",
    )
    flags.mark_flags_as_required(["workdir", "dataset", "out"])


def main(argv):
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    step = FLAGS.step
    if step is not None and step.isdigit():
        step = int(step)
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
