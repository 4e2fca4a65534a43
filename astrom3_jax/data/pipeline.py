"""Training and evaluation batches over a random-access source, with grain.

`make_train_loader`: this process's shuffled training batches, resumable
from `get_state()`; `make_eval_batches`: every example once, the last batch
padded, with a `mask`. Rows are read by source_reader; batches are dicts of
numpy arrays (contracts in the README).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

import grain
import numpy as np

from astrom3_jax.data import memory_cache
from astrom3_jax.data import modalities as modalities_lib
from astrom3_jax.data.modalities import Ragged
from astrom3_jax.data.source_reader import PackedSource, Reader, fill_absent

LABEL_KEY = "label"
# Share of the available memory an in-memory split may take (memory_cache).
DEFAULT_CACHE_FRACTION = 0.5


class _BatchBuilder:
    """Turns the global row indices of one step into this process's batch dict.

    A whole batch is read at once and each modality's transform is
    vectorised over it (per-example Python work capped throughput). Every
    process plans the same global batch and reads its own contiguous slice
    (process p: rows [p * local, (p + 1) * local)); random crops are drawn
    per global row, so the data do not depend on the number of processes.
    A modality the data set's objects may lack (decided once per source)
    gets `presence_key(m)` (float32 (B,): 1 where the object has all of m's
    fields) in every batch, and zeros in its absent rows (the light curve's
    mask rows too); a data set without holes gets no flags and the same
    arrays as ever, so its training computes what it always did.
    Row index -1 marks a padding row (evaluation only): zeros, mask 0.
    """

    def __init__(
        self,
        source,
        names,
        *,
        seq_len,
        train,
        seed,
        global_batch,
        shard_index,
        shard_count,
        extra_fields,
    ):
        self.mods = modalities_lib.get(names)
        fields = [f for m in self.mods for f in m.fields] + [LABEL_KEY, *extra_fields]
        ragged = [f for m in self.mods for f in m.ragged_fields]
        self.reader = Reader(source, fields, ragged)
        self.seq_len, self.train, self.seed = seq_len, train, seed
        self.global_batch = global_batch
        self.local = global_batch // shard_count
        self.lo = shard_index * self.local
        self.extra_fields = tuple(extra_fields)
        # Presence flags for the modalities objects of this data set may lack
        # (a complete data set gets none: everything is present).
        self.flagged = {
            m.name
            for m in self.mods
            if any(f in self.reader.may_lack for f in m.fields)
        }

    def __call__(self, step: int, global_rows: np.ndarray) -> dict:
        rows = np.full(self.global_batch, -1, np.int64)
        rows[: len(global_rows)] = global_rows
        u = (
            np.random.default_rng([self.seed, step]).random(self.global_batch)
            if self.train
            else np.zeros(self.global_batch)
        )
        sl = slice(self.lo, self.lo + self.local)
        rows, u = rows[sl], u[sl]
        real = rows >= 0
        # A process may have no real rows in the last eval batch: read row 0 for shapes.
        read_rows, read_u = (
            (rows[real], u[real]) if real.any() else (np.zeros(1, np.int64), u[:1])
        )
        cols = self.reader.read(read_rows)
        present = {}  # field -> (n,) bool, for fields some objects lack
        for f, col in list(cols.items()):
            if isinstance(col, Ragged) and f not in self.reader.ragged_fields:
                cols[f], present[f] = fill_absent(col, f)
        ctx = modalities_lib.Context(
            self.train,
            self.seq_len,
            read_u,
            np.random.default_rng([self.seed, step, 1]),
        )
        out = {}
        for m in self.mods:
            has = np.ones(len(read_rows), bool)
            for f in m.fields:
                if f in present:
                    has &= present[f]
            got = m.transform(cols, ctx)
            if not has.all():  # absent rows hold zeros, whatever was written
                got = {k: _zero_rows(v, ~has) for k, v in got.items()}
            out.update(got)
            if m.name in self.flagged:  # a modality the data set's objects may lack
                out[modalities_lib.presence_key(m.name)] = has.astype(np.float32)
        out[LABEL_KEY] = np.asarray(cols[LABEL_KEY], np.int32)
        for f in self.extra_fields:
            out[f] = cols[f]
        if real.all():
            out["mask"] = np.ones(self.local, np.float32)
            return out
        return _pad_rows(out, real)


def _zero_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    values = np.array(values, copy=True)
    values[rows] = 0
    return values


def _pad_rows(out: dict, real: np.ndarray) -> dict:
    padded = {}
    for k, v in out.items():
        full = np.zeros((len(real), *v.shape[1:]), v.dtype)
        if v.dtype == object:
            full[:] = b""
        if real.any():
            full[real] = v
        padded[k] = full
    padded["mask"] = real.astype(np.float32)
    return padded


def _check_batch(batch_size: int, shard_count: int) -> None:
    if batch_size % shard_count:
        raise ValueError(f"batch_size {batch_size} % shard_count {shard_count} != 0")


class _EpochBatches(Sequence):
    """Global batch k of a stream reshuffled every epoch, batched per epoch.

    Epoch e is np.random.default_rng([seed, e]).permutation(n) cut into
    n // batch_size batches (the remainder is dropped): batches never
    straddle epochs, and the iterator's state is the step counter, so
    `get_state()`/`set_state()` resume exactly. One vectorised
    permutation per epoch instead of grain's per-element index shuffle, which
    cost half the time of a cached batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, num_epochs: int | None):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = n // batch_size
        self._len = self.steps_per_epoch * num_epochs if num_epochs else sys.maxsize
        self._cache = (-1, None)

    def __len__(self) -> int:
        return self._len

    def permutation(self, epoch: int) -> np.ndarray:
        cached_epoch, perm = self._cache
        if cached_epoch != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._cache = (epoch, perm)
        return perm

    def __getitem__(self, k: int) -> np.ndarray:
        if not 0 <= k < self._len:
            raise IndexError(k)
        epoch, step = divmod(k, self.steps_per_epoch)
        return self.permutation(epoch)[
            step * self.batch_size : (step + 1) * self.batch_size
        ]


def _eval_rows(k: int, *, n: int, batch_size: int) -> np.ndarray:
    return np.arange(k * batch_size, min((k + 1) * batch_size, n), dtype=np.int64)


# --------------------------------------------------------------- public API


def make_train_loader(
    source,
    *,
    batch_size: int,
    seed: int,
    modalities: Sequence[str] = modalities_lib.DEFAULT_MODALITIES,
    seq_len: int = 200,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_count: int = 0,
    num_epochs: int | None = None,
    cache: bool = False,
    cache_memory_fraction: float | None = DEFAULT_CACHE_FRACTION,
    read_threads: int = 1,
    prefetch: int = 2,
    extra_fields: Sequence[str] = (),
) -> grain.DatasetIterator:
    """Training batches of this process: shuffled per epoch, random crops.

    Args:
      source: random-access source of example dicts (`open_tfds_source(...)`,
        any TFDS data source, a `PackedSource`, or a list of dicts).
      batch_size: GLOBAL batch size; this process yields batch_size //
        shard_count rows (shard_index's slice of every global batch).
      seed: fixes the order of every epoch and every crop.
      num_epochs: None repeats forever. The last partial batch of each epoch
        is dropped.
      worker_count: grain worker processes (0 = in-process). Pinned by the
        caller; batches are the same for any value.
      cache: decode the source once into a `PackedSource` in memory first,
        if it fits in cache_memory_fraction of the available memory (None:
        whatever its size); otherwise read it batch by batch (logged).
      read_threads, prefetch: grain ReadOptions (threads, batches ahead).

    Returns:
      A grain DatasetIterator; `get_state()` gives a small JSON-able dict,
      `set_state(state)` on a freshly built iterator resumes exactly there
      (the trainer stores it in each checkpoint's JSON metadata).
    """
    _check_batch(batch_size, shard_count)
    builder = _BatchBuilder(
        _maybe_cache(
            source,
            modalities,
            cache,
            extra_fields,
            cache_memory_fraction,
            "training split",
        ),  # fmt: skip
        modalities,
        seq_len=seq_len,
        train=True,
        seed=seed,
        global_batch=batch_size,
        shard_index=shard_index,
        shard_count=shard_count,
        extra_fields=extra_fields,
    )
    if len(source) < batch_size:
        raise ValueError(
            f"{len(source)} examples cannot fill one batch of {batch_size}"
        )
    plan = grain.MapDataset.source(
        _EpochBatches(len(source), batch_size, seed, num_epochs)
    )
    ds = plan.map_with_index(builder).to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)
    )
    if worker_count > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(ds)


class EvalBatches:
    """Re-iterable evaluation batches with a length (for progress bars)."""

    def __init__(self, dataset: grain.MapDataset, read_options: grain.ReadOptions):
        self.dataset = dataset
        self._read_options = read_options

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        return iter(self.dataset.to_iter_dataset(self._read_options))


def make_eval_batches(
    source,
    *,
    batch_size: int,
    modalities: Sequence[str] = modalities_lib.DEFAULT_MODALITIES,
    seq_len: int = 200,
    shard_index: int = 0,
    shard_count: int = 1,
    cache: bool = False,
    cache_memory_fraction: float | None = DEFAULT_CACHE_FRACTION,
    read_threads: int = 1,
    prefetch: int = 2,
    extra_fields: Sequence[str] = (),
) -> EvalBatches:
    """Every example exactly once, in source order, centre-cropped.

    The last global batch is padded with zero rows; `mask` (B,) is 1 for real
    rows, and the presence flags of padding rows are 0 too. Every process
    yields the same number of batches. `extra_fields` (e.g. ('id',)) are
    copied into the batch (b'' on padding rows).
    """
    _check_batch(batch_size, shard_count)
    builder = _BatchBuilder(
        _maybe_cache(
            source,
            modalities,
            cache,
            extra_fields,
            cache_memory_fraction,
            "evaluation split",
        ),  # fmt: skip
        modalities,
        seq_len=seq_len,
        train=False,
        seed=0,
        global_batch=batch_size,
        shard_index=shard_index,
        shard_count=shard_count,
        extra_fields=extra_fields,
    )
    n = len(source)
    plan = grain.MapDataset.range(-(-n // batch_size)).map(
        functools.partial(_eval_rows, n=n, batch_size=batch_size)
    )
    return EvalBatches(
        plan.map_with_index(builder),
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch),
    )


def _maybe_cache(source, names, cache: bool, extra_fields, fraction, what):
    """`source` decoded into memory when asked and, unless fraction is None,
    when it fits in that fraction of the available memory (memory_cache)."""
    if not cache or isinstance(source, PackedSource):
        return source
    mods = modalities_lib.get(names)
    fields = [f for m in mods for f in m.fields] + [LABEL_KEY, *extra_fields]
    ragged = [f for m in mods for f in m.ragged_fields]
    if fraction is not None and not memory_cache.should_cache(
        Reader(source, fields, ragged), len(source), what=what, fraction=fraction
    ):
        return source
    return PackedSource.from_source(source, fields, ragged)


def open_tfds_source(
    split: str, *, config: str = "full_42", data_dir: str | None = None
):
    """`builder.as_data_source(split)` for the prepared `astrom3/<config>` data set."""
    # datasets imports TFDS and JAX (seconds); the batching needs neither.
    from astrom3_jax.data import datasets

    return datasets.open_sources(config, [split], data_dir)[split]
