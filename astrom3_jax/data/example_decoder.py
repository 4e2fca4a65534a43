"""Decodes serialized TFDS tf.train.Example records straight into numpy.

TFDS's generic per-example decoder capped the input pipeline's throughput;
this one reads the few wire types the astrom3 features use and hands any
other record to TFDS, so its results always equal TFDS's decoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the protobuf varint at `pos`."""
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
    n, pos = read_varint(buf, pos + 1)
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
                v, pstart = read_varint(buf, pstart)
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


def is_plain_tfds_source(source) -> bool:
    """A TFDS data source whose raw records we may decode ourselves."""
    method = getattr(source, "deserialize_method", None)
    return (
        hasattr(source, "data_source")
        and hasattr(source, "dataset_info")
        and getattr(source, "decoders", None) is None
        and getattr(method, "name", None) == "DESERIALIZE_AND_DECODE"
    )
