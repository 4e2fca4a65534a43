"""Reads the fields of a batch of examples into numpy columns, whatever the source.

A source is a TFDS data source (records decoded by example_decoder), a
PackedSource (decoded once, held in memory) or a list of dicts. A field some
objects lack becomes a `Ragged` of 0 (absent) or 1 (present) rows per object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from astrom3_jax.data.example_decoder import ExampleDecoder, is_plain_tfds_source
from astrom3_jax.data.modalities import Ragged


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
        reader = Reader(source, fields, ragged_fields)
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


class Reader:
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
        if not isinstance(source, PackedSource) and is_plain_tfds_source(source):
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
