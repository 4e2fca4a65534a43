"""Reads a user's catalogue table (one row per star) into checked rows.

Any table astropy reads (CSV, ECSV, FITS, VOTable); the columns and what a
blank cell means are described in the README ("Your own variable stars").
Files the rows point at are not opened here (catalog_rows does that).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

import numpy as np
from absl import logging

from astrom3_jax import errors
from astrom3_jax.data import modalities, schema
from astrom3_jax.data.names import suggestion

TABLE_SUFFIXES = (
    ".csv", ".tsv", ".tab", ".ecsv", ".fits", ".fit", ".fits.gz", ".vot", ".xml",
)  # fmt: skip
# astropy format per suffix; others are left to astropy's own guess.
_FORMATS = {
    ".csv": "ascii.csv",
    ".tsv": "ascii.tab",
    ".tab": "ascii.tab",
    ".vot": "votable",
    ".xml": "votable",
}

# Columns with a fixed meaning (besides schema.ALL_COLS).
ID, NAME, LABEL, LIGHTCURVE, SPECTRUM, SPLIT = (
    "id",
    "name",
    "label",
    "lightcurve",
    "spectrum",
    "split",
)
# Optional, per light curve: the band to use and the file's column names.
BAND, LC_COLUMNS = "band", "lc_columns"
FIXED = (ID, NAME, LABEL, LIGHTCURVE, SPECTRUM, SPLIT, BAND, LC_COLUMNS)
# `split` cells (lower-cased) -> TFDS split names.
SPLIT_VALUES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "test": "test",
}


class CatalogError(errors.UserError, ValueError):
    """The catalogue table cannot be used as a whole (file, columns, ids, limits)."""


@dataclasses.dataclass(frozen=True, eq=False)
class CatalogRow:
    """One row of a catalogue, as read (files not opened yet). Rows compare
    by identity: `values` is an array."""

    index: int  # 0-based data row (a CSV's line number is index + 2)
    id: str
    name: str
    label: str | None
    lightcurve: str | None  # absolute path
    spectrum: str | None  # absolute path
    # (len(schema.ALL_COLS),) float64, read-only, in schema.ALL_COLS order,
    # NaN where blank: a row of one matrix (a tuple of Python floats would
    # take four times the memory of a large catalogue)
    values: np.ndarray
    split: str | None = None  # 'train' | 'validation' | 'test' | None
    problem: str = ""  # a cell that could not be read (reported as a bad row)
    band: str | None = None  # the light curve's band to use (None: the rule)
    lc_columns: str | None = None  # the light-curve file's column names
    # photometry_values.DERIVABLE already measured from this row's light curve
    # (the statistics pass of a build), so processing need not measure again
    measured: tuple[float, ...] | None = None
    # The columns of registered modalities' own readers (reader_columns),
    # NaN where blank; None when no registered modality has one.
    columns: Mapping[str, float] | None = None


@dataclasses.dataclass(frozen=True)
class Catalog:
    """A catalogue table: its absolute path and its rows, in table order."""

    path: str
    rows: tuple[CatalogRow, ...]
    has_labels: bool
    has_split: bool
    unused_columns: tuple[str, ...] = ()  # read but not used (warned about)

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)

    def __len__(self) -> int:
        return len(self.rows)


def reader_columns() -> tuple[str, ...]:
    """The columns registered modalities read themselves (Modality.catalog_columns)."""
    cols = [c for m in modalities.catalog_readers() for c in m.catalog_columns]
    return tuple(dict.fromkeys(cols))


def find_catalog(folder: str | os.PathLike, stem: str = "catalog") -> str:
    """The one `<stem>.<csv|ecsv|fits|vot|xml>` table in `folder`."""
    folder = os.fspath(folder)
    found = [
        os.path.join(folder, stem + s)
        for s in TABLE_SUFFIXES
        if os.path.exists(os.path.join(folder, stem + s))
    ]
    if not found:
        raise CatalogError(
            f"{folder} holds no catalogue table: expected one of "
            f"{', '.join(stem + s for s in TABLE_SUFFIXES)}"
        )
    if len(found) > 1:
        raise CatalogError(
            f"{folder} holds several catalogue tables ({', '.join(found)}); keep one"
        )
    return found[0]


def read_table(path: str, what: str):
    """A table astropy reads, its format fixed by the suffix where _FORMATS
    names one; ValueError says in one line what could not be read and what
    to do (astropy's own message can list every format it knows)."""
    # astropy.table takes about a second to import: only reading needs it.
    from astropy.table import Table

    if not os.path.exists(path):
        raise FileNotFoundError(path)
    low = path.lower()
    fmt = [f for suffix, f in _FORMATS.items() if low.endswith(suffix)]
    kw = {"format": fmt[0]} if fmt else {}
    try:
        return Table.read(path, **kw)
    except Exception as e:  # astropy raises many types for unreadable tables
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"unreadable {what} ({type(e).__name__}: {first}); write it as "
            "comma-separated .csv, tab-separated .tsv, .ecsv, .fits or .vot, "
            "with one header line of column names"
        ) from None


def _lower_columns(table, path: str, what: str) -> dict[str, str]:
    """lower-case name -> actual name; two names equal but for case is an error."""
    out: dict[str, str] = {}
    for c in table.colnames:
        key = c.strip().lower()
        if key in out:
            raise CatalogError(
                f"{what} {path}: columns {out[key]!r} and {c!r} differ only in case"
            )
        out[key] = c
    return out


def _cells(table, col: str | None) -> list:
    """A column's values as Python objects; None for a masked or blank cell
    (and for every cell when the column is missing)."""
    if col is None:
        return [None] * len(table)
    column = table[col]
    mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else None
    out = []
    for i, value in enumerate(np.asarray(column).tolist()):
        if mask is not None and mask.ndim == 1 and mask[i]:
            value = None
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            value = value.strip() or None
        out.append(value)
    return out


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _numbers(table, col: str | None, name: str) -> tuple[np.ndarray, dict[int, str]]:
    """A catalogue-value column as float64 (NaN where blank or masked) and
    its problems by row. Numeric columns are converted whole; others (text
    that should hold numbers) cell by cell, so each bad cell is named."""
    if col is None:
        return np.full(len(table), np.nan), {}
    column = table[col]
    if np.asarray(column).dtype.kind in "biuf" and np.ndim(column) == 1:
        values = np.asarray(column, dtype=np.float64).copy()
        mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else None
        if mask is not None:
            values[mask] = np.nan
        return values, {}
    values, problems = np.empty(len(table)), {}
    for i, cell in enumerate(_cells(table, col)):
        values[i], problem = _number(cell, name)
        if problem:
            problems[i] = problem
    return values, problems


def _number(value, col: str) -> tuple[float, str]:
    """(value as float or NaN when blank, problem or '')."""
    if value is None:
        return math.nan, ""
    try:
        return float(value), ""
    except (TypeError, ValueError):
        return math.nan, f"column {col} is not a number: {str(value)!r}"


def _resolve(folder: str, path: str | None) -> str | None:
    if path is None:
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(folder, path))


def read_catalog(path: str | os.PathLike) -> Catalog:
    """Reads and checks a catalogue table; see the module docstring for columns.

    Table-level problems (unreadable file, no `id` column, a blank or repeated
    id, only some of the catalogue columns, an invalid `split`) raise
    CatalogError. Row-level ones are kept in CatalogRow.problem and reported
    when the row is processed, so skip_bad can leave such rows out.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        table = read_table(path, "catalogue table")
    except FileNotFoundError:
        raise CatalogError(f"catalogue table {path} not found") from None
    except ValueError as e:
        raise CatalogError(f"{path}: {e}") from None
    cols = _lower_columns(table, path, "catalogue")
    if ID not in cols:
        raise CatalogError(
            f"catalogue {path} has no `id` column (columns: "
            f"{', '.join(table.colnames)})"
        )
    missing_meta = [c for c in schema.META_COLS if c not in cols]
    if len(missing_meta) not in (0, len(schema.META_COLS)):
        raise CatalogError(
            f"catalogue {path} has some of the metadata columns but lacks "
            f"{', '.join(missing_meta)}; give all {len(schema.META_COLS)} "
            f"({', '.join(schema.META_COLS)}) or none"
        )
    unused = _unused_columns(cols, path)
    folder = os.path.dirname(path)
    cell = {key: _cells(table, cols.get(key)) for key in FIXED}
    matrix = np.empty((len(table), len(schema.ALL_COLS)))
    problems: dict[int, list[str]] = {}
    for j, c in enumerate(schema.ALL_COLS):
        matrix[:, j], bad = _numbers(table, cols.get(c), c)
        for i, problem in bad.items():
            problems.setdefault(i, []).append(problem)
    matrix.flags.writeable = False
    own = reader_columns()
    extra = np.empty((len(table), len(own)))
    for j, c in enumerate(own):
        extra[:, j], bad = _numbers(table, cols.get(c), c)
        for i, problem in bad.items():
            problems.setdefault(i, []).append(problem)
    del table
    rows, seen = [], {}
    for i in range(len(matrix)):
        oid = _text(cell[ID][i])
        if oid is None:
            raise CatalogError(f"catalogue {path}, row {i}: blank id")
        if oid in seen:
            raise CatalogError(
                f"catalogue {path}: id {oid!r} is in rows {seen[oid]} and {i}; "
                "ids must be unique"
            )
        seen[oid] = i
        split = _text(cell[SPLIT][i])
        if SPLIT in cols:
            key = (split or "").lower()
            if key not in SPLIT_VALUES:
                raise CatalogError(
                    f"catalogue {path}, row {i} (id {oid!r}): split {split!r}; "
                    "expected train, validation (or val) or test"
                )
            split = SPLIT_VALUES[key]
        rows.append(
            CatalogRow(
                index=i,
                id=oid,
                name=_text(cell[NAME][i]) or oid,
                label=_text(cell[LABEL][i]),
                lightcurve=_resolve(folder, _text(cell[LIGHTCURVE][i])),
                spectrum=_resolve(folder, _text(cell[SPECTRUM][i])),
                values=matrix[i],
                split=split,
                problem="; ".join(problems.get(i, ())),
                band=_text(cell[BAND][i]),
                lc_columns=_text(cell[LC_COLUMNS][i]),
                **_own_columns(own, extra[i]),
            )
        )
    if not rows:
        raise CatalogError(f"catalogue {path} has no rows")
    return Catalog(
        path=path,
        rows=tuple(rows),
        has_labels=LABEL in cols,
        has_split=SPLIT in cols,
        unused_columns=unused,
    )


def _own_columns(own: tuple[str, ...], values: np.ndarray) -> dict:
    """CatalogRow's `columns` argument (none: its default, None)."""
    if not own:
        return {}
    return {"columns": dict(zip(own, values.tolist(), strict=True))}


def _unused_columns(cols: dict[str, str], path: str) -> tuple[str, ...]:
    """Columns no part of the model reads, logged with a close known name
    (a misspelt `lightcurve` would silently leave every light curve out)."""
    known = (*FIXED, *schema.ALL_COLS, *reader_columns())
    unused = tuple(actual for key, actual in cols.items() if key not in known)
    if unused:
        logging.warning(
            "catalogue %s: column(s) not used: %s. Known columns are listed in "
            "the README (Your own variable stars)",
            path,
            ", ".join(f"{c!r}{suggestion(c.strip().lower(), known)}" for c in unused),
        )
    return unused
