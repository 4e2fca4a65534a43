"""TFDS's example sorter held to a small memory buffer, spilling to plain files.

Before writing a split, TFDS's writer sorts its serialised examples by hashed
key. It keeps them in memory up to 1 GB and only then spills them into 1,000
bucket files, each sorted on its own at the end; either way the examples come
out in key order, so the records written are the same. Its bucket files are
written through `tf.io.gfile`, which needs TensorFlow, not a dependency of
this project: `bounded_memory` lowers the buffer and puts in a bucket written
with Python's own files. Each bucket gathers a few KiB before it appends them
to its file, so 1,000 buckets never hold 1,000 open files.
"""

from __future__ import annotations

import contextlib
import os
import struct

from tensorflow_datasets.core import shuffle as tfds_shuffle

BUCKET_BUFFER_BYTES = 32 << 10  # per bucket: at most ~32 MiB over 1,000 buckets
_KEY = struct.Struct(">QQ")  # a 128-bit key
_SIZE = struct.Struct(">Q")


class FileBucket:
    """One bucket of keyed examples on disk: appended to, then read once."""

    def __init__(self, path):
        self._path = os.fspath(path)
        self._pending = bytearray()
        self._length = 0
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._length

    def add(self, key: int, data: bytes):
        self._pending += _KEY.pack(key >> 64, key & (2**64 - 1))
        self._pending += _SIZE.pack(len(data))
        self._pending += data
        self._length += 1
        self._size += len(data)
        if len(self._pending) >= BUCKET_BUFFER_BYTES:
            self.flush()

    def flush(self):
        if self._pending:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            with open(self._path, "ab") as f:
                f.write(self._pending)
            self._pending = bytearray()

    def read_values(self):
        """(key, data) pairs in the order they were added."""
        self.flush()
        if not os.path.exists(self._path):
            return
        with open(self._path, "rb") as f:
            while head := f.read(_KEY.size):
                high, low = _KEY.unpack(head)
                (size,) = _SIZE.unpack(f.read(_SIZE.size))
                yield (high << 64) | low, f.read(size)

    def del_file(self):
        if os.path.exists(self._path):
            os.remove(self._path)


@contextlib.contextmanager
def bounded_memory(max_bytes: int):
    """While open, TFDS's writer keeps at most `max_bytes` of a split's
    examples in memory and sorts the rest through FileBucket files beside the
    build; both settings are put back on leaving."""
    before = tfds_shuffle.MAX_MEM_BUFFER_SIZE, tfds_shuffle._Bucket
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = min(before[0], max_bytes)
    tfds_shuffle._Bucket = FileBucket
    try:
        yield
    finally:
        tfds_shuffle.MAX_MEM_BUFFER_SIZE, tfds_shuffle._Bucket = before
