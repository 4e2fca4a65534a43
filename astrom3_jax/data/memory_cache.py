"""Whether a split is decoded into memory: measured size against free memory.

Decoding a split once (source_reader.PackedSource) makes every later epoch
a numpy gather, several times faster than reading the array_record files;
it also holds the whole split in memory, which a large data set may not
fit. `should_cache` decodes an even sample of the split, scales its size to
the whole and caches only when that (twice over: the parts and the joined
copy both exist while packing) fits in a fraction of the memory available
now; otherwise the batches are read from the files. Either way one log line
says which and why.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from astrom3_jax.data.modalities import Ragged

SAMPLE = 256  # examples decoded to measure a split
PACKING_PEAK = 2.0  # memory while packing, in units of the packed split


def available_bytes() -> int | None:
    """Memory the system can give now without swapping (Linux MemAvailable;
    elsewhere free pages), or None when it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def nbytes(columns: dict) -> int:
    """Bytes of decoded columns (a Ragged counts its values and offsets)."""
    total = 0
    for c in columns.values():
        if isinstance(c, Ragged):
            total += c.values.nbytes + c.starts.nbytes + c.lengths.nbytes
        else:
            total += np.asarray(c).nbytes
    return total


def estimate_bytes(reader, n: int, sample: int = SAMPLE) -> int:
    """The packed size of all `n` examples, from `sample` evenly spaced ones
    read through `reader` (a source_reader.Reader)."""
    if n == 0:
        return 0
    picked = np.unique(np.linspace(0, n - 1, min(sample, n)).round().astype(np.int64))
    return round(nbytes(reader.read(picked)) * n / len(picked))


def should_cache(
    reader,
    n: int,
    *,
    what: str,
    fraction: float,
    available: int | None = None,
) -> bool:
    """True when `n` examples of `reader`'s source, decoded, fit in
    `fraction` of the available memory (measured now unless given)."""
    available = available_bytes() if available is None else available
    if available is None:
        logging.info(
            "Decoding the %s (%d examples) into memory: free memory is unknown "
            "on this system.", what, n,
        )  # fmt: skip
        return True
    need = estimate_bytes(reader, n)
    budget = fraction * available
    mib = 2**20
    if PACKING_PEAK * need <= budget:
        logging.info(
            "Decoding the %s (%d examples, about %.0f MiB) into memory: it "
            "fits in %g of the %.0f MiB available.",
            what, n, need / mib, fraction, available / mib,
        )  # fmt: skip
        return True
    logging.warning(
        "Reading the %s (%d examples) from its files every epoch instead of "
        "decoding it into memory: it needs about %.0f MiB (%.0f MiB while "
        "packing), more than %g of the %.0f MiB available. Training is slower; "
        "raise cache_memory_fraction to cache it anyway.",
        what, n, need / mib, PACKING_PEAK * need / mib, fraction, available / mib,
    )  # fmt: skip
    return False
