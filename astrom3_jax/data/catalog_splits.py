"""Train/validation/test splits of a user's catalogue, and the statistics
of its train split (the `catalog` data set config's normalisation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from absl import logging

from astrom3_jax.data import catalog_rows, schema
from astrom3_jax.data import workers as workers_lib
from astrom3_jax.data.catalog_tables import Catalog, CatalogError, CatalogRow
from astrom3_jax.data.normalisation import NormalisationStats

SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def assign_splits(catalog: Catalog, seed: int = 42) -> dict[str, list[CatalogRow]]:
    """{'train' | 'validation' | 'test': rows}, each in row order.

    From the `split` column when the table has one; otherwise drawn with
    `seed`: per label (rows without a label form one more group) the rows
    spread evenly (stratified) over train / validation / test in the
    proportions 80 / 10 / 10 % (each at least one row). Needs >= 3 rows.
    """
    if catalog.has_split:
        out = {s: [r for r in catalog.rows if r.split == s] for s in SPLIT_FRACTIONS}
    else:
        if len(catalog) < 3:
            raise CatalogError(
                f"catalog {catalog.path} has {len(catalog)} row(s); drawing "
                "train/validation/test needs at least 3 (or give a split column)"
            )
        # Stratified by label without per-class rounding: within each group
        # (rows without a label form one more) the rows get evenly spaced
        # keys (rank + offset) / size in random order; sorted by key, the
        # first 10 % are test, the next 10 % validation, the rest train.
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(catalog.rows):
            groups.setdefault(r.label or "", []).append(i)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 20]))
        keys = np.empty(len(catalog))
        for name in sorted(groups):
            idx = np.asarray(groups[name])
            ranks = rng.permutation(len(idx))
            keys[idx] = (ranks + rng.uniform()) / len(idx)
        order = np.lexsort((rng.permutation(len(catalog)), keys))
        n_te = max(1, int(round(len(catalog) * SPLIT_FRACTIONS["test"])))
        n_va = max(1, int(round(len(catalog) * SPLIT_FRACTIONS["validation"])))
        picked = {
            "test": order[:n_te],
            "validation": order[n_te : n_te + n_va],
            "train": order[n_te + n_va :],
        }
        out = {s: [catalog.rows[i] for i in sorted(picked[s])] for s in SPLIT_FRACTIONS}
    empty = [s for s, rows in out.items() if not rows]
    if empty:
        raise CatalogError(
            f"catalog {catalog.path}: no rows in split(s) {', '.join(empty)}"
        )
    return out


def measure_rows(
    rows: Sequence[CatalogRow],
    source: str = "",
    *,
    derive_photometry: bool = False,
    band: str | None = None,
    num_workers: int | None = None,
) -> list[CatalogRow]:
    """`rows`, each one whose light-curve numbers must be measured
    (catalog_rows.needs_measuring) carrying them in `measured`, so that the
    statistics and the processing of a build measure each light curve once.
    Measured in worker processes (workers.ordered_map); a row whose light
    curve cannot give them is left as it is (processing reports it)."""
    todo = [
        i
        for i, r in enumerate(rows)
        if r.measured is None and catalog_rows.needs_measuring(r, derive_photometry)
    ]
    out = list(rows)
    if not todo:
        return out
    measured = workers_lib.ordered_map(
        _measure, [rows[i] for i in todo], workers=num_workers, setup=dict,
        setup_args=({"band": band},),
        name=lambda r: f"row {r.index} (id {r.id!r})", source=source,
        task="measuring light curves",
    )  # fmt: skip
    for i, m in zip(todo, measured, strict=True):
        if m is not None:
            out[i] = dataclasses.replace(rows[i], measured=m)
    return out


def stats_of_rows(
    rows: Sequence[CatalogRow],
    source: str = "",
    *,
    derive_photometry: bool = False,
    band: str | None = None,
    num_workers: int | None = None,
) -> NormalisationStats:
    """Normalisation statistics of rows' catalogue values (the train rows).

    The values are those the rows will be given (catalog_rows.values_for_stats):
    light-curve numbers a row lacks are measured from its light curve (see
    measure_rows; rows that carry them already are not measured again),
    every row's with derive_photometry. A column's blank or NaN values are
    left out of its statistics; a column blank in every row (no metadata in
    the catalogue, no rfr_score) gets mean 0, std 1, with a warning.
    """
    rows = measure_rows(
        rows, source, derive_photometry=derive_photometry, band=band,
        num_workers=num_workers,
    )  # fmt: skip
    values = [
        catalog_rows.values_for_stats(
            r, derive_photometry=derive_photometry, measure_missing=False
        )
        for r in rows
    ]
    return stats_of_values(values, source)


def stats_of_values(
    values: Sequence[np.ndarray], source: str = ""
) -> NormalisationStats:
    """Statistics of per-row raw values (schema.ALL_COLS order, row order)."""
    matrix = np.asarray(values, np.float64).reshape(len(values), len(schema.ALL_COLS))
    blank = [
        c for j, c in enumerate(schema.ALL_COLS) if not np.isfinite(matrix[:, j]).any()
    ]
    if blank:
        logging.warning(
            "%s: column(s) %s are blank in every row; their statistics are set "
            "to mean 0, std 1",
            source or "train rows",
            ", ".join(blank),
        )
    table = {c: matrix[:, j] for j, c in enumerate(schema.ALL_COLS)}
    return NormalisationStats.from_table(table, source=source, unit_for_blank=blank)


def _measure(row: CatalogRow, options: dict):
    return catalog_rows.measure(row, **options)
