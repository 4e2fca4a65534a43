"""A user's catalogue made model-ready: `preprocess(table, stats)`.

Reads the table (catalog_tables; its format is in the README), takes every
row through the builder's preprocessing (catalog_rows) in row order, in
worker processes for large tables (workers), and stops at, or collects
(skip_bad, bad_rows.csv), the bad rows.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from astrom3_jax.data import modalities
from astrom3_jax.data import workers as workers_lib
from astrom3_jax.data.catalog_rows import (
    CatalogExample,
    RowError,
    process_row,
)
from astrom3_jax.data.catalog_tables import (
    Catalog,
    CatalogError,
    CatalogRow,
    read_catalog,
)
from astrom3_jax.data.lightcurve_files import DEFAULT_MAG_ZERO_POINT
from astrom3_jax.data.normalisation import NormalisationStats

DEFAULT_MAX_BAD_FRACTION = 0.05
BAD_ROWS_FILE = "bad_rows.csv"
BAD_ROWS_COLUMNS = ("row", "id", "file", "reason")


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A row left out: its 0-based index, id, the file at fault and why."""

    row: int
    id: str
    file: str
    reason: str


def _process(row: CatalogRow, state: dict):
    """(example, None, measured) for a good row, (None, RowError, None) for a
    bad one; measured is state["measure"](example), None without one."""
    try:
        example = process_row(row, **state["options"])
    except RowError as e:
        return None, e, None
    measure = state["measure"]
    return example, None, None if measure is None else measure(example)


def _row_name(row: CatalogRow) -> str:
    return f"row {row.index} (id {row.id!r})"


def iter_processed(
    rows: Sequence[CatalogRow],
    stats: NormalisationStats,
    *,
    catalog: str = "",
    require: Sequence[str] = (),
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    band: str | None = None,
    derive_photometry: bool = False,
    num_workers: int | None = None,
    measure: Callable[[CatalogExample], Any] | None = None,
) -> Iterator[tuple[CatalogRow, CatalogExample | None, RowError | None, Any]]:
    """Yields (row, example | None, error | None, measured) in row order.

    band: the light-curve band of rows whose `band` cell is blank (None: the
    rule of lightcurve_cleaning.choose_band). derive_photometry: measure
    amplitude, period and lksl_statistic from every light curve, even where
    the catalogue gives them (catalog_rows.process_row).

    measure: a further measurement of each good row's example (picklable, e.g.
    a module-level function or a partial of one), made where the row is
    preprocessed, so that worker processes share its cost; measured is its
    result, None for bad rows and without measure.

    num_workers <= 1 works in this process, otherwise a spawn-started process
    pool (workers.ordered_map); None: workers.default_workers(len(rows)).
    """
    options = dict(
        stats=stats,
        catalog=catalog,
        require=tuple(require),
        mag_zero_point=mag_zero_point,
        band=band,
        derive_photometry=derive_photometry,
    )
    state = {"options": options, "measure": measure}
    results = workers_lib.ordered_map(
        _process, rows, workers=num_workers, setup=dict, setup_args=(state,),
        name=_row_name, source=f"catalog {catalog}" if catalog else "",
        task="preprocessing",
    )  # fmt: skip
    with contextlib.closing(results):
        for row, (example, error, measured) in zip(rows, results, strict=True):
            yield row, example, error, measured


def allowed_bad(n_rows: int, max_bad_fraction: float) -> int:
    """How many of n_rows may be bad: floor(fraction * n), as the builder."""
    return math.floor(max_bad_fraction * n_rows + 1e-9)


@dataclasses.dataclass(frozen=True)
class Preprocessed:
    """What `preprocess` gives: the good rows' examples and the bad rows."""

    examples: tuple[CatalogExample, ...]  # good rows, in row order
    bad_rows: tuple[BadRow, ...]


def preprocess(
    catalog: Catalog | str | os.PathLike,
    stats: NormalisationStats,
    *,
    skip_bad: bool = False,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    bad_rows_path: str | os.PathLike | None = None,
    require: Sequence[str] = (),
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    band: str | None = None,
    derive_photometry: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> Preprocessed:
    """Every row of a catalogue through the builder's preprocessing.

    Strict by default: the first bad row (in row order) raises its RowError.
    With skip_bad, bad rows are collected (and written to bad_rows_path, a
    CSV of row, id, file, reason, when given, also when the call then fails);
    more than max_bad_fraction of the rows bad (or all of them) raises
    CatalogError. band: the light-curve band of rows whose `band` cell is
    blank (None: V, else g, else the band with the most points); each
    example's `light_curve` records what was used. Blank light-curve catalogue
    numbers are measured from the light curve (derive_photometry: always).
    """
    from tqdm import tqdm

    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    if not isinstance(catalog, Catalog):
        catalog = read_catalog(catalog)
    known = modalities.catalog_names()
    unknown = [m for m in require if m not in known]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {known}")
    examples, bad = [], []
    bar = tqdm(
        total=len(catalog), desc=f"catalog {os.path.basename(catalog.path)}",
        disable=not progress, unit="obj",
    )  # fmt: skip
    with bar:
        for _, example, error, _ in iter_processed(
            catalog.rows, stats, catalog=catalog.path, require=require,
            mag_zero_point=mag_zero_point, band=band,
            derive_photometry=derive_photometry, num_workers=num_workers,
        ):  # fmt: skip
            bar.update()
            if error is None:
                examples.append(example)
            elif skip_bad:
                bad.append(BadRow(error.row, error.id, error.file, error.problem))
            else:
                raise RowError(
                    f"{error.problem} (pass skip_bad=True / --skip_bad to leave "
                    f"such rows out and list them in {BAD_ROWS_FILE})",
                    catalog=error.catalog, row=error.row, id=error.id,
                    file=error.file,
                )  # fmt: skip
    if bad_rows_path is not None and skip_bad:
        write_bad_rows(bad_rows_path, bad)
    n = len(catalog)
    limit = allowed_bad(n, max_bad_fraction)
    listed = f" They are listed in {bad_rows_path}." if bad_rows_path else ""
    if len(bad) == n:
        raise CatalogError(
            f"catalog {catalog.path}: all {n} rows are bad, nothing to use.{listed} "
            f"First: row {bad[0].row} (id {bad[0].id!r}): {bad[0].reason}"
        )
    if len(bad) > limit:
        raise CatalogError(
            f"catalog {catalog.path}: {len(bad)} of {n} rows are bad "
            f"({100 * len(bad) / n:.1f}%), more than max_bad_fraction="
            f"{max_bad_fraction:g} allows ({limit}).{listed} Fix them, or allow "
            "more with max_bad_fraction= / --max_bad_fraction."
        )
    return Preprocessed(tuple(examples), tuple(bad))


def write_bad_rows(path: str | os.PathLike, bad: Sequence[BadRow]) -> str:
    """bad_rows.csv: row (0-based), id, file, reason; one line per bad row."""
    path = os.fspath(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(BAD_ROWS_COLUMNS)
        for b in bad:
            w.writerow([b.row, b.id, b.file, b.reason])
    return path
