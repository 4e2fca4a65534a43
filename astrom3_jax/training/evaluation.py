"""The one evaluation path: a model run data-parallel over every object of a data set.

Validation, the fine-tuning test, the embeddings export and `predict` on a
user's catalogue all call `predict` here; docs/design.md has its key rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from astrom3_jax import models
from astrom3_jax.data import pipeline
from astrom3_jax.data.modalities import PRESENT_SUFFIX
from astrom3_jax.training import sharding

OutputsFn = Callable  # (model, batch, rngs, axis_name) -> (metrics, outputs)


def device_fields(batch: Mapping) -> dict:
    """The numeric fields of a host batch (text fields such as ids stay home)."""
    return {k: v for k, v in batch.items() if np.asarray(v).dtype.kind in "biuf"}


def model_outputs(model, batch, rngs, axis_name):
    """The default outputs: whatever the model gives per row (`predict_outputs`:
    embeddings per modality, and logits for classifiers), plus the batch's
    presence flags (`<modality>_present`) where it has them; no batch metrics."""
    del axis_name
    out = dict(model.predict_outputs(batch, rngs=rngs))
    out.update({k: v for k, v in batch.items() if k.endswith(PRESENT_SUFFIX)})
    return {}, out


def make_predict_step(graphdef, mesh, outputs_fn: OutputsFn = model_outputs):
    """jit(shard_map(...)): (params, frozen, rest, batch, key) -> (batch
    metrics incl. 'count' of real rows, per-row outputs sharded over rows)."""

    def per_device(params, frozen, rest, batch, key):
        model = nnx.merge(graphdef, params, frozen, rest)
        metrics, outputs = outputs_fn(model, batch, nnx.Rngs(sample=key), sharding.AXIS)
        metrics = dict(metrics)
        metrics["count"] = jax.lax.psum(jnp.sum(batch["mask"]), sharding.AXIS)
        return metrics, outputs

    fn = sharding.data_parallel(
        per_device,
        mesh,
        in_specs=(P(), P(), P(), P(sharding.AXIS), P()),
        out_specs=(P(), P(sharding.AXIS)),
    )
    return jax.jit(fn)


@dataclasses.dataclass
class Prediction:
    """What `predict` returns for one data set."""

    metrics: dict  # batch metrics averaged over real rows (weighted by count)
    outputs: dict  # per-row outputs of the real rows, in split order
    columns: dict  # host fields of the real rows (label, id, ...), split order

    def __len__(self) -> int:
        return int(self.metrics.get("count", 0))


def predict(
    step,
    parts: Sequence,
    batches: Iterable[Mapping],
    mesh,
    key,
    *,
    host_fields: Sequence[str] = ("label",),
    on_batch: Callable[[int], None] | None = None,
    sink: Callable[[dict, dict], None] | None = None,
) -> Prediction:
    """Run `step` over `batches`: every object once, in split order.

    `step` is a per-device program (`jax.shard_map` over the ('data',) mesh,
    see `make_predict_step`) jitted once: `outputs_fn(model, batch, rngs,
    axis_name) -> (batch metrics, per-row outputs)`, the batch metrics
    already means over the real rows of the global batch. The padding rows
    of the last batch are computed but never returned nor counted. Each
    batch's results are fetched while the next one runs (one host sync per
    batch, one batch behind). Host-side index columns (id, name, label, ...)
    are taken from the batches themselves, so no example is decoded twice.

    `parts` are the (params, frozen, rest) states the step takes, replicated
    on `mesh`; `key` the replicated evaluation key. `host_fields` are the
    batch fields copied (real rows only) into `Prediction.columns`;
    `on_batch(n_real_rows)` is called after each fetch (progress bars).
    With several processes, outputs hold every row of the global batches
    but columns only this process's rows (`index_from_source` reads them).
    `sink(outputs, columns)`, when given, gets each fetched batch's real
    rows instead of their being kept (`Prediction.outputs` and `.columns`
    are then empty): a caller that writes them as they come holds one batch,
    not the data set (export).
    """
    sums: dict[str, float] = {}
    total = 0.0
    outs: list[dict] = []
    cols: dict[str, list] = {k: [] for k in host_fields}

    def fetch(item):
        nonlocal total
        metrics, outputs, device_mask, host = item
        metrics = jax.device_get(metrics)
        n = float(metrics.pop("count"))
        total += n
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        metrics, outputs, device_mask, host = item
        keep = sharding.to_host(device_mask) > 0  # the global batch's real rows
        rows = {k: sharding.to_host(v)[keep] for k, v in outputs.items()}
        local = np.asarray(host["mask"]) > 0  # this process's real rows
        fields = {k: np.asarray(host[k])[local] for k in cols if k in host}
        if sink is not None:
            sink(rows, fields)
        else:
            outs.append(rows)
            for k, v in fields.items():
                cols[k].append(v)
        if on_batch is not None:
            on_batch(int(keep.sum()))

    pending = None
    with jax.set_mesh(mesh):
        for batch in batches:
            device = sharding.shard_batch(device_fields(batch), mesh)
            result = step(*parts, device, key)
            if pending is not None:  # fetch the previous batch while this runs
                fetch(pending)
            pending = (*result, device["mask"], batch)
        if pending is not None:
            fetch(pending)
    metrics = {k: v / max(total, 1.0) for k, v in sums.items()}
    metrics["count"] = total
    outputs = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} if outs else {}
    columns = {k: np.concatenate(v) for k, v in cols.items() if v}
    return Prediction(metrics, outputs, columns)


class Predictor:
    """A fixed model compiled once for `predict` over any number of data sets.

    `outputs_fn` defaults to the model's own per-row outputs
    (`predict_outputs`); tasks pass their eval function to get their batch
    metrics too. `seed` is the run's `config.seed`: the ProbSparse key sample
    at evaluation is drawn from `models.eval_key(seed)` (the evaluation key
    rule, docs/design.md).
    """

    def __init__(
        self,
        model,
        *,
        seed: int,
        outputs_fn: OutputsFn = model_outputs,
        mesh=None,
    ):
        model.eval()
        self.mesh = mesh if mesh is not None else sharding.make_mesh()
        # (params, no frozen params, the rest): the step's signature in training.
        graphdef, params, frozen, rest = nnx.split(model, nnx.Param, nnx.Param, ...)
        with jax.set_mesh(self.mesh):
            self.step = make_predict_step(graphdef, self.mesh, outputs_fn)
            self.parts = sharding.replicate((params, frozen, rest), self.mesh)
            self.key = sharding.replicate(models.eval_key(seed), self.mesh)

    def run(
        self,
        source,
        *,
        batch_size: int,
        modalities: Sequence[str],
        seq_len: int,
        host_fields: Sequence[str] = ("label",),
        progress: bool = False,
        description: str | None = None,
        sink: Callable[[dict, dict], None] | None = None,
    ) -> Prediction:
        """Every object of the random-access `source`, in order (`sink`: as
        `predict`'s, each batch's rows handed over instead of kept)."""
        from tqdm import tqdm

        sharding.check_batch_size(batch_size, self.mesh)
        first = source[0] if len(source) else {}
        host_fields = tuple(f for f in host_fields if f == "label" or f in first)
        extra = tuple(f for f in host_fields if f != "label")
        batches = pipeline.make_eval_batches(
            source,
            batch_size=batch_size,
            modalities=tuple(modalities),
            seq_len=seq_len,
            shard_index=jax.process_index(),
            shard_count=jax.process_count(),
            extra_fields=extra,
        )
        bar = tqdm(
            total=len(source),
            unit="obj",
            desc=description,
            disable=not progress or jax.process_index() != 0,
        )
        try:
            return predict(
                self.step,
                self.parts,
                batches,
                self.mesh,
                self.key,
                host_fields=host_fields,
                on_batch=bar.update,
                sink=sink,
            )
        finally:
            bar.close()


def index_from_source(source, fields: Sequence[str]) -> dict:
    """Index columns read from the source itself (multi-process runs, where
    each process saw only its own rows of every batch)."""
    rows = [source[i] for i in range(len(source))]
    return {f: np.asarray([r[f] for r in rows]) for f in fields if f in rows[0]}
