"""grain input pipeline over the TFDS `astrom3` data source.

Training: `make_train_loader` returns a grain `DatasetIterator` of batches
(dicts of numpy arrays, see the contracts in the README). Evaluation:
`make_eval_batches` returns a grain `MapDataset` of padded batches with a
`mask` so no example is dropped.

How it is put together, and why:
- Records are gathered a whole batch at a time (one batched ArrayRecord read,
  then a cheap protobuf decode straight into numpy) and every modality's
  transform is vectorised over the batch; per-example Python work and TFDS's
  generic decoder were what capped throughput.
- The index plan is a grain MapDataset over global steps: step k of epoch
  e takes rows [k * B, (k + 1) * B) of a NumPy permutation seeded by
  (seed, e), so every epoch is reshuffled, batches never straddle epochs
  (the last partial batch is dropped), and the iterator's state is the step
  counter, so `get_state()`/`set_state()` resume exactly.
- Multi-process: every process plans the same GLOBAL batch and reads only
  its own contiguous slice of rows (process p gets rows
  [p * local, (p + 1) * local)). Per step the processes' rows are disjoint and
  together are the global batch; random crops are drawn per global row, so the
  data a run sees does not depend on the number of processes.
- Batch composition is fixed by the plan above, not by `worker_count`; it
  only moves work into grain worker processes.
- Objects may lack modalities. A data set whose objects may lack one stores
  that modality's fields with a leading axis of length 1 (present) or 0
  (absent); a list-of-dicts source may give None for an absent field. Such
  a field is read as a `Ragged` of 0 or 1 rows per object (the in-memory
  copy keeps only the present rows), handed to the transforms with zeros in
  the absent rows, and every batch carries, per requested modality m,
  `presence_key(m)` (float32 (B,): 1 where the object has all of m's
  fields) for every requested modality the data set lets objects lack
  (decided once per source, so every batch has the same keys; a plain
  list of dicts is scanned once for None fields). The
  batch arrays of an absent modality's rows are zeros (the light curve's
  mask rows too), whatever the transform wrote there. A data set without
  holes gives no flags (everything present) and the same arrays as before:
  its training computes exactly what it always did (a loss over all-ones
  flags is the same number mathematically, not bit for bit once compiled).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence

import grain
import numpy as np

from astrom3_jax.data import modalities as modalities_lib
from astrom3_jax.data.modalities import Ragged

LABEL_KEY = "label"


# ------------------------------------------------------------------ decoding


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _len_field(buf: bytes, pos: int, tag: int) -> tuple[int, int]:
    """The length-delimited field `tag` at pos: its payload (start, end)."""
    if buf[pos] != tag:
        raise _Unexpected
    n, pos = _varint(buf, pos + 1)
    return pos, pos + n


class _Unexpected(Exception):
    """A record whose encoding the fast decoder does not handle."""


class ExampleDecoder:
    """Decodes serialized TFDS tf.train.Example records straight into numpy.

    Handles what the astrom3 features serialize to: float Tensors as packed
    float lists, ClassLabel/int Tensors as packed int64 lists, Text as bytes.
    Anything else (or an unexpected record) falls back to TFDS's own
    `deserialize_example_np`, so results always equal TFDS's decoding.
    """

    def __init__(self, features, fields: Sequence[str]):
        self._features = features
        self._wanted = {}
        self._fast = True
        for name in fields:
            spec = features[name].get_serialized_info()
            dtype = np.dtype(spec.np_dtype)
            shape = tuple(spec.shape)
            # Encoded tensors (bytes/zlib) serialize to another shape: TFDS decodes.
            self._fast &= shape == tuple(features[name].shape) and dtype.kind in "fiuO"
            self._wanted[name.encode()] = (name, dtype, shape)

    def decode(self, record: bytes) -> dict:
        if self._fast:
            try:
                return self._decode_fast(record)
            except (_Unexpected, IndexError):
                pass
        full = self._features.deserialize_example_np(record)
        return {name: full[name] for name, _, _ in self._wanted.values()}

    def _decode_fast(self, buf: bytes) -> dict:
        out = {}
        pos, end = _len_field(buf, 0, 0x0A)  # Example.features
        while pos < end:
            entry, pos = _len_field(buf, pos, 0x0A)  # one map entry
            kstart, kend = _len_field(buf, entry, 0x0A)  # its key
            want = self._wanted.get(buf[kstart:kend])
            if want is not None:
                vstart, vend = _len_field(buf, kend, 0x12)  # its Feature
                out[want[0]] = self._feature(buf, vstart, vend, *want)
        if len(out) != len(self._wanted):
            raise _Unexpected
        return out

    def _feature(self, buf, start, end, name, dtype, shape):
        if start == end:
            raise _Unexpected
        kind = buf[start]
        lstart, lend = _len_field(buf, start, kind)  # the *List message
        if lstart == lend:  # empty list
            data = np.zeros((0,), dtype)
        elif kind == 0x12 and dtype == np.float32:  # FloatList, packed
            pstart, pend = _len_field(buf, lstart, 0x0A)
            data = np.frombuffer(buf, "<f4", (pend - pstart) // 4, pstart)
        elif kind == 0x1A and dtype.kind in "iu":  # Int64List, packed
            pstart, pend = _len_field(buf, lstart, 0x0A)
            vals = []
            while pstart < pend:
                v, pstart = _varint(buf, pstart)
                vals.append(v - (1 << 64) if v >= 1 << 63 else v)
            data = np.asarray(vals, dtype)
        elif kind == 0x0A and dtype.kind == "O":  # BytesList (Text)
            s, e = _len_field(buf, lstart, 0x0A)
            if e != lend:
                raise _Unexpected
            return buf[s:e]
        else:
            raise _Unexpected
        if shape == ():
            if data.size != 1:
                raise _Unexpected
            return data[0]
        if None in shape:
            return data.reshape(-1, *shape[1:])
        return data.reshape(shape)


def _is_plain_tfds_source(source) -> bool:
    """A TFDS data source whose raw records we may decode ourselves."""
    method = getattr(source, "deserialize_method", None)
    return (
        hasattr(source, "data_source")
        and hasattr(source, "dataset_info")
        and getattr(source, "decoders", None) is None
        and getattr(method, "name", None) == "DESERIALIZE_AND_DECODE"
    )


def _stack_columns(
    examples: Sequence[Mapping],
    fields,
    ragged_fields,
    optional_fields=frozenset(),
    shape_of=None,
) -> dict:
    """Columns of a batch of examples.

    optional_fields are stored with a leading 0-or-1 axis: they become a
    Ragged of 0 or 1 rows per example. A field given as None in some example
    (a list source without it) becomes one too; shape_of(field, values)
    says its (inner shape, dtype) when no example of the batch has it.
    """
    cols = {}
    for f in fields:
        raw = [e[f] for e in examples]
        if f in ragged_fields:
            if any(v is None for v in raw):  # absent: no rows
                inner = shape_of(f, raw)[0][1:]
                raw = [np.zeros((0, *inner)) if v is None else v for v in raw]
            vals = [np.asarray(v) for v in raw]
            cols[f] = Ragged.from_list(vals, vals[0].shape[1:], np.float32)
        elif f in optional_fields:
            vals = [np.asarray(v) for v in raw]
            cols[f] = Ragged.from_list(vals, vals[0].shape[1:], vals[0].dtype)
        elif any(v is None for v in raw):
            inner, dtype = shape_of(f, raw)
            vals = [
                np.zeros((0, *inner), dtype) if v is None else np.asarray(v)[None]
                for v in raw
            ]
            cols[f] = Ragged.from_list(vals, inner, dtype)
        else:
            vals = [np.asarray(v) for v in raw]
            if vals[0].dtype == object:
                cols[f] = np.array(vals, dtype=object)
            else:
                cols[f] = np.stack(vals)
    return cols


def _as_ragged(col) -> Ragged:
    """A column as a Ragged (a dense column: one row per example)."""
    if isinstance(col, Ragged):
        return col
    col = np.asarray(col)
    n = len(col)
    return Ragged(col, np.arange(n, dtype=np.int64), np.ones(n, np.int64))


def fill_absent(col: Ragged, field: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(dense values, present) of a column of 0 or 1 rows per example.

    Absent examples get zeros: fill values that `present` flags, never data.
    """
    if len(col) and col.lengths.max() > 1:
        raise ValueError(
            f"field {field!r} holds {int(col.lengths.max())} rows for one object; "
            "a field an object may lack holds 0 (absent) or 1 (present)"
        )
    present = col.lengths == 1
    dense = np.zeros((len(col), *col.values.shape[1:]), col.values.dtype)
    dense[present] = col.values[col.starts[present]]
    return dense, present


def optional_fields(source, fields: Sequence[str], ragged_fields=()) -> frozenset:
    """The fields of `source` stored with a leading 0-or-1 axis.

    From the TFDS feature spec (a leading None dimension on a field that is
    not variable-length by nature), or the in-memory copy's Ragged columns.
    """
    ragged = set(ragged_fields)
    declared = getattr(source, "optional_fields", None)  # e.g. a catalogue's
    if declared is not None:
        return frozenset(f for f in fields if f in declared)
    if isinstance(source, PackedSource):
        return frozenset(
            f
            for f in fields
            if f not in ragged and isinstance(source.columns.get(f), Ragged)
        )
    info = getattr(source, "dataset_info", None)
    features = getattr(info, "features", None)
    if features is None:
        return frozenset()
    out = set()
    for f in fields:
        if f in ragged or f not in features:
            continue
        shape = tuple(getattr(features[f], "shape", ()) or ())
        if shape and shape[0] is None:
            out.add(f)
    return frozenset(out)


def _plain_source(source) -> bool:
    """A source of example dicts with no schema (e.g. a list of dicts)."""
    return not (
        isinstance(source, PackedSource)
        or getattr(source, "optional_fields", None) is not None
        or getattr(source, "dataset_info", None) is not None
    )


def fields_some_lack(source, fields: Sequence[str], ragged_fields=()) -> frozenset:
    """The fields that some object of `source` may lack, for the whole source.

    A data set's schema says it (optional_fields); a plain source (a list of
    dicts) is scanned once for fields given as None. Decided per source, not
    per batch, so that every batch of a data set has the same keys.
    """
    out = set(optional_fields(source, fields, ragged_fields))
    if _plain_source(source):
        for i in range(len(source)):
            example = source[i]
            out.update(f for f in fields if f not in out and example[f] is None)
    return frozenset(out)


# ------------------------------------------------------------ in-memory copy


class PackedSource:
    """The fields the pipeline needs, decoded once and held in memory.

    Batches are then pure numpy gathers (no per-record work at all). Worth it
    whenever the split fits in RAM (the full AstroM3 train split is ~0.6 GB,
    almost all spectra); each process holds its own copy.
    """

    def __init__(self, columns: dict, ragged_fields: Sequence[str] = ()):
        self.columns = columns
        self.ragged_fields = tuple(ragged_fields)
        first = next(iter(columns.values()))
        self._len = len(first)

    @classmethod
    def from_source(
        cls,
        source,
        fields: Sequence[str],
        ragged_fields: Sequence[str] = (),
        chunk: int = 1024,
    ):
        """Reads every example of `source` once (through the fast reader)."""
        reader = _Reader(source, fields, ragged_fields)
        parts = [
            reader.read(np.arange(i, min(i + chunk, len(source))))
            for i in range(0, len(source), chunk)
        ]
        columns = {}
        for f in reader.fields:
            col_parts = [p[f] for p in parts]
            if f in reader.ragged_fields or any(
                isinstance(c, Ragged) for c in col_parts
            ):  # variable-length, or some objects lack it: keep only what exists
                columns[f] = Ragged.concatenate([_as_ragged(c) for c in col_parts])
            else:
                columns[f] = np.concatenate(col_parts)
        return cls(columns, reader.ragged_fields)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict:
        return {
            f: (c.row(i) if isinstance(c, Ragged) else c[i])
            for f, c in self.columns.items()
        }

    def gather(self, indices: np.ndarray, fields: Sequence[str]) -> dict:
        return {
            f: (c.take(indices) if isinstance(c, Ragged) else c[indices])
            for f, c in ((f, self.columns[f]) for f in fields)
        }


# -------------------------------------------------------------------- reader


class _Reader:
    """Reads the fields of a batch of examples into columns, whatever the source."""

    def __init__(
        self, source, fields: Sequence[str], ragged_fields: Sequence[str] = ()
    ):
        self.source = source
        self.fields = tuple(dict.fromkeys(fields))
        self.ragged_fields = tuple(f for f in ragged_fields if f in self.fields)
        self.optional_fields = optional_fields(source, self.fields, self.ragged_fields)
        self.may_lack = fields_some_lack(source, self.fields, self.ragged_fields)
        self._shapes: dict[str, tuple] = {}
        self._decoder = None
        if not isinstance(source, PackedSource) and _is_plain_tfds_source(source):
            self._decoder = ExampleDecoder(source.dataset_info.features, self.fields)

    def _shape_of(self, field: str, values) -> tuple:
        """(inner shape, dtype) of a field some examples lack (None)."""
        for v in values:
            if v is not None:
                v = np.asarray(v)
                return v.shape, v.dtype
        if field not in self._shapes:  # no example of this batch has it
            for i in range(len(self.source)):
                v = self.source[i][field]
                if v is not None:
                    v = np.asarray(v)
                    self._shapes[field] = (v.shape, v.dtype)
                    break
            else:
                raise ValueError(
                    f"no example of the source has field {field!r}, so its "
                    "shape is unknown; leave the modality out of `modalities`"
                )
        return self._shapes[field]

    def read(self, indices: np.ndarray) -> dict:
        indices = np.asarray(indices, np.int64)
        if isinstance(self.source, PackedSource):
            return self.source.gather(indices, self.fields)
        keys = indices.tolist()
        if self._decoder is not None:
            examples = [
                self._decoder.decode(r)
                for r in self.source.data_source.__getitems__(keys)
            ]
        elif hasattr(self.source, "__getitems__"):
            examples = self.source.__getitems__(keys)
        else:
            examples = [self.source[k] for k in keys]
        return _stack_columns(
            examples,
            self.fields,
            self.ragged_fields,
            self.optional_fields,
            self._shape_of,
        )


# ------------------------------------------------------------------- batches


class _BatchBuilder:
    """Turns the global row indices of one step into this process's batch dict.

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
        self.reader = _Reader(source, fields, ragged)
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
    n // batch_size batches (the remainder is dropped). One vectorised
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
      cache: decode the source once into a `PackedSource` in memory first.
      read_threads, prefetch: grain ReadOptions (threads, batches ahead).

    Returns:
      A grain DatasetIterator; `get_state()` gives a small JSON-able dict,
      `set_state(state)` on a freshly built iterator resumes exactly there
      (the trainer stores it in each checkpoint's JSON metadata).
    """
    _check_batch(batch_size, shard_count)
    builder = _BatchBuilder(
        _maybe_cache(source, modalities, cache, extra_fields),
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
        _maybe_cache(source, modalities, cache, extra_fields),
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


def _maybe_cache(source, names, cache: bool, extra_fields):
    if not cache or isinstance(source, PackedSource):
        return source
    mods = modalities_lib.get(names)
    fields = [f for m in mods for f in m.fields] + [LABEL_KEY, *extra_fields]
    return PackedSource.from_source(
        source, fields, [f for m in mods for f in m.ragged_fields]
    )


def open_tfds_source(
    split: str, *, config: str = "full_42", data_dir: str | None = None
):
    """`builder.as_data_source(split)` for the prepared `astrom3/<config>` data set."""
    from astrom3_jax.data import datasets

    return datasets.open_sources(config, [split], data_dir)[split]
