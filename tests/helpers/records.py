"""Stored records read back, for tests that compare two builds.

A tf.train.Example's features are a protobuf map, whose serialised order is
not fixed (it differs between processes), so two builds are compared by
feature name, each feature's bytes exactly.
"""

from __future__ import annotations

import glob
import os

from array_record.python.array_record_module import ArrayRecordReader

from astrom3_jax.data.example_decoder import read_varint


def field(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of the length-delimited field at pos."""
    tag = buf[pos]
    assert tag & 7 == 2, f"unexpected wire type in tag {tag}"
    n, pos = read_varint(buf, pos + 1)
    return tag, pos, pos + n


def features_of(record: bytes) -> dict[str, bytes]:
    """A tf.train.Example's {feature name: serialized Feature}."""
    _, pos, end = field(record, 0)
    out = {}
    while pos < end:
        _, epos, eend = field(record, pos)
        pos = eend
        parts = {}
        while epos < eend:
            tag, s, e = field(record, epos)
            parts[tag] = record[s:e]
            epos = e
        out[parts[0x0A].decode()] = parts.get(0x12, b"")
    return out


def split_records(data_dir, split: str) -> list[dict[str, bytes]]:
    """Every record of a split's array_record shards, in order, by feature."""
    out = []
    pattern = os.path.join(os.fspath(data_dir), f"*-{split}.array_record-*")
    for path in sorted(glob.glob(pattern)):
        reader = ArrayRecordReader(path)
        try:
            out.extend(features_of(r) for r in reader.read_all())
        finally:
            reader.close()
    return out
