"""LAMOST spectrum files read with NumPy alone: the fast path of
`release_io.read_spectrum`.

astropy.io.fits turns every header card into objects and builds a record
array for a binary table, which costs about 4 ms for a one-row LAMOST table:
most of the time `predict` spends parsing a star with a spectrum. The two
layouts the release uses are simple: headers of 80-character cards in
2880-byte blocks, then big-endian data. `arrays` reads exactly those two
layouts and returns None for anything else (scaled or integer data, heap
arrays, other HDU counts, unexpected bytes), so that the caller falls back
to astropy, which then also words the error.
"""

from __future__ import annotations

import gzip
import re

import numpy as np

BLOCK = 2880
CARD = 80
_FLOAT_IMAGE = {-32: ">f4", -64: ">f8"}
# Binary-table codes of fixed-width numeric fields; anything else (strings,
# bits, logicals, heap pointers) sends the file to astropy.
_TABLE_CODES = {"E": ">f4", "D": ">f8", "I": ">i2", "J": ">i4", "K": ">i8", "B": "u1"}
_TFORM = re.compile(r"^\s*(\d*)([A-Z])")


class _Unsupported(Exception):
    """Outside the subset read here; astropy reads (or refuses) the file."""


def arrays(raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(wavelength, flux, inverse variance) as float64, or None when the file
    is not one of the two plain layouts (see `release_io.read_spectrum`).

    `raw` is the file's bytes, gzipped or not.
    """
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return _read(memoryview(raw))
    except (_Unsupported, ValueError, EOFError, OSError, gzip.BadGzipFile):
        return None


def _read(buf: memoryview):
    if bytes(buf[:9]) != b"SIMPLE  =":
        raise _Unsupported
    head, data_at = _header(buf, 0)
    if _value(head, "SIMPLE") != "T":
        raise _Unsupported
    naxes = _axes(head)
    image_end = _data_end(buf, head, naxes, data_at)
    if not any(buf[image_end:]):
        return _one_hdu(buf, head, naxes, data_at)
    table, table_at = _header(buf, image_end)
    if _value(table, "XTENSION") != "BINTABLE":
        raise _Unsupported
    table_axes = _axes(table)
    if any(buf[_data_end(buf, table, table_axes, table_at) :]):
        raise _Unsupported  # a third HDU, or bytes astropy would warn about
    return _two_hdu(buf, table, table_axes, table_at)


def _data_end(buf, cards, naxes, at) -> int:
    """Where an HDU's padded data ends; a file cut short inside the data
    goes to astropy, which says it is truncated."""
    size = _data_bytes(cards, naxes)
    if at + size > len(buf):
        raise _Unsupported
    return at + _padded(size)


def _one_hdu(buf, head, naxes, at):
    """2-D primary image: row 0 flux, row 1 ivar; wavelength from COEFF0/1."""
    dtype = _FLOAT_IMAGE.get(_int(head, "BITPIX"))
    if dtype is None or len(naxes) != 2 or naxes[1] < 2 or "BLANK" in head:
        raise _Unsupported
    if _float(head, "BSCALE", 1.0) != 1.0 or _float(head, "BZERO", 0.0) != 0.0:
        raise _Unsupported
    n = naxes[0]
    image = np.frombuffer(buf, dtype, count=2 * n, offset=at).astype(np.float64)
    wave = log_linear_wavelength(_float(head, "COEFF0"), _float(head, "COEFF1"), n)
    return wave, image[:n], image[n:]


def log_linear_wavelength(coeff0: float, coeff1: float, n: int) -> np.ndarray:
    """The image layout's wavelengths: pixel i is at 10**(COEFF0 + i*COEFF1) A."""
    return np.power(10.0, coeff0 + np.arange(n, dtype=np.float64) * coeff1)


def _two_hdu(buf, table, naxes, at):
    """Row 0 of a binary table: fields 1, 2, 3 are flux, ivar, wavelength."""
    n_fields = _int(table, "TFIELDS")
    if len(naxes) != 2 or naxes[1] < 1 or n_fields < 3:
        raise _Unsupported
    offset, fields = 0, []
    for i in range(1, n_fields + 1):
        if f"TSCAL{i}" in table or f"TZERO{i}" in table:
            raise _Unsupported
        match = _TFORM.match(_value(table, f"TFORM{i}"))
        if match is None:
            raise _Unsupported
        repeat = int(match.group(1) or 1)
        dtype = _TABLE_CODES.get(match.group(2))
        if dtype is None:
            raise _Unsupported
        fields.append((offset, repeat, dtype))
        offset += repeat * np.dtype(dtype).itemsize
    if offset != naxes[0] or len({repeat for _, repeat, _ in fields[:3]}) != 1:
        raise _Unsupported  # fields that do not fill the row, or differ in length
    flux, ivar, wave = (
        np.frombuffer(buf, dtype, count=repeat, offset=at + start).astype(np.float64)
        for start, repeat, dtype in fields[:3]
    )
    return wave, flux, ivar


# ------------------------------------------------------------------ headers
def _header(buf: memoryview, start: int) -> tuple[dict[str, str], int]:
    """Cards from `start` up to END as {keyword: value text}, and the offset of
    the first byte after the header's last block."""
    cards: dict[str, str] = {}
    pos = start
    while True:
        if pos + BLOCK > len(buf):
            raise _Unsupported  # no END card: truncated
        block = bytes(buf[pos : pos + BLOCK]).decode("ascii")
        pos += BLOCK
        for i in range(0, BLOCK, CARD):
            card = block[i : i + CARD]
            key = card[:8].rstrip()
            if key == "END":
                return cards, pos
            if card[8:10] == "= ":
                cards[key] = card[10:]


def _value(cards: dict[str, str], key: str) -> str:
    """A card's value without its comment; strings without quotes."""
    if key not in cards:
        raise _Unsupported
    text = cards[key].lstrip()
    if text.startswith("'"):
        end = text.find("'", 1)
        while end != -1 and text[end + 1 : end + 2] == "'":  # '' escapes a quote
            end = text.find("'", end + 2)
        if end == -1:
            raise _Unsupported
        return text[1:end].replace("''", "'").rstrip()
    return text.split("/", 1)[0].strip()


def _int(cards, key) -> int:
    return int(_value(cards, key))


def _float(cards, key, default: float | None = None) -> float:
    if default is not None and key not in cards:
        return default
    return float(_value(cards, key).replace("D", "E"))


def _axes(cards) -> list[int]:
    return [_int(cards, f"NAXIS{i}") for i in range(1, _int(cards, "NAXIS") + 1)]


def _data_bytes(cards, naxes) -> int:
    if not naxes:
        return 0
    if "XTENSION" in cards and (_int(cards, "PCOUNT"), _int(cards, "GCOUNT")) != (0, 1):
        raise _Unsupported  # heap data (variable-length arrays) or groups
    return abs(_int(cards, "BITPIX")) // 8 * int(np.prod(naxes))


def _padded(n: int) -> int:
    return n + (-n) % BLOCK
