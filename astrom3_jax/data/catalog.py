"""A user's own stars: a catalogue table pointing at raw files, made model-ready.

The table (CSV, ECSV, FITS or VOTable; anything `astropy.table.Table.read`
reads) has one row per object. Column names are matched case-insensitively:

- `id` (required, unique): the object's identifier;
- `name` (optional): a display name (default: the id);
- `label` (optional): a class name of schema.CLASSES (DSCT, EA, EB, EW, HADS,
  M, ROT, RRAB, RRC, SR); blank when unknown;
- `lightcurve` (optional): a file of one light curve, either an ASAS-SN
  `.dat` file as in the release (HJD MAG MAG_ERR FLUX FLUX_ERR; FLUX and
  FLUX_ERR are used), or any other table astropy reads (`.csv`, `.ecsv`,
  `.fits`, `.vot`, ...) with a time column and flux or magnitude columns,
  see `read_light_curve_table`;
- `spectrum` (optional): a LAMOST low-resolution FITS file, in either layout
  the release has (one 2-D image HDU with COEFF0/COEFF1, or a binary table
  in HDU 1), plain or gzipped;
- the 38 catalogue columns by their release names (schema.ALL_COLS);
- `split` (optional, read only by the `catalog` build config): train,
  validation (or val) or test.

Relative paths resolve against the folder of the table. A blank cell means
"absent". What a row's cells mean:

- photometry is present when `lightcurve` is given; the 4 photometric
  columns (amplitude, period, lksl_statistic, rfr_score, from the ASAS-SN
  variable-star catalogue) are part of it (they become light-curve channels)
  and must then all be given;
- metadata is present when the 34 metadata columns (schema.META_COLS) are
  given: all blank means no metadata; some blank (or NaN, or inf) is a bad
  row whose message names the missing columns: the model cannot be given a
  partial row, and a silent fill value would be a guess;
- spectra are present when `spectrum` is given;
- a row with none of the three is a bad row.

Every present modality goes through the builder's own functions
(preprocessing.normalise_catalogue / preprocess_light_curve /
preprocess_spectrum, release_io.parse_dat / read_spectrum), so a row gives
exactly the features the builder writes for the same raw files. The
catalogue columns and the light curve's 4 photometric channels are z-scored
with a model's training statistics (normalisation.NormalisationStats):

    stats = normalisation.read_stats(workdir)  # or .from_info_json(path)
    out = preprocess("stars.csv", stats, skip_bad=True,
                     bad_rows_path="bad_rows.csv")
    out.examples[0].features, out.examples[0].present

The `catalog` data set config (python -m tfds_builders.build --config
catalog --manual_dir DIR) builds a TFDS data set from DIR/catalog.csv with
the same functions; there every row needs a light curve
(names.CATALOG_OPTIONAL_MODALITIES are the ones it may lack).

Bad rows (unreadable file, too few light-curve points, a blank or NaN
catalogue value, an unknown class, ...) stop `preprocess` with an error that
names the row, its id, the file and the problem; with skip_bad=True they are
collected (`BadRow`, `write_bad_rows` -> bad_rows.csv) and the call fails
only when more than max_bad_fraction of the rows are bad.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import csv
import dataclasses
import math
import multiprocessing
import os
import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from astrom3_jax import errors
from astrom3_jax.data import preprocessing, release_io, schema
from astrom3_jax.data.normalisation import NormalisationStats

MODALITIES = ("photometry", "spectra", "metadata")
TABLE_SUFFIXES = (".csv", ".ecsv", ".fits", ".fit", ".fits.gz", ".vot", ".xml")
DEFAULT_MAX_BAD_FRACTION = 0.05
BAD_ROWS_FILE = "bad_rows.csv"
BAD_ROWS_COLUMNS = ("row", "id", "file", "reason")

# Light-curve tables: accepted column names (lower case, units in brackets
# dropped: "flux(mJy)" is "flux"), the first one found wins.
TIME_COLUMNS = ("hjd", "bjd", "jd", "mjd", "time", "t")
FLUX_COLUMNS = ("flux",)
FLUX_ERR_COLUMNS = ("flux_err", "flux_error", "fluxerr", "e_flux", "sigma_flux")
MAG_COLUMNS = ("mag", "magnitude")
MAG_ERR_COLUMNS = ("mag_err", "mag_error", "magerr", "e_mag", "sigma_mag")
# Magnitude m with error e -> flux 10**(-0.4 (m - ZP)), error flux * e * ln10/2.5.
# ZP 16.4 puts the flux in mJy on the AB scale (3631 Jy at m = 0), the unit of
# ASAS-SN's FLUX column, so that log10(MAD), the one scale-dependent
# light-curve channel, is on the scale the models were trained on.
DEFAULT_MAG_ZERO_POINT = 16.4

# Columns with a fixed meaning (besides schema.ALL_COLS).
ID, NAME, LABEL, LIGHTCURVE, SPECTRUM, SPLIT = (
    "id",
    "name",
    "label",
    "lightcurve",
    "spectrum",
    "split",
)
FIXED = (ID, NAME, LABEL, LIGHTCURVE, SPECTRUM, SPLIT)
# `split` cells (lower-cased) -> TFDS split names.
SPLIT_VALUES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "test": "test",
}


class CatalogError(errors.UserError, ValueError):
    """The catalogue table cannot be used as a whole (file, columns, ids, limits)."""


class RowError(errors.UserError, ValueError):
    """One bad row: names the catalogue, the row, its id, the file and the problem."""

    def __init__(
        self, problem: str, *, catalog: str = "", row: int = -1, id: str = "",
        file: str = "",
    ):  # fmt: skip
        self.problem, self.catalog, self.row, self.id = problem, catalog, row, id
        self.file = os.fspath(file)
        where = []
        if catalog:
            where.append(f"catalog {catalog}")
        if row >= 0:
            where.append(f"row {row} (id {id!r})")
        if self.file and self.file != catalog:
            where.append(f"file {self.file}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)

    def __reduce__(self):  # survives a worker process's pickling
        return (
            _rebuild_row_error,
            (self.problem, self.catalog, self.row, self.id, self.file),
        )


def _rebuild_row_error(problem, catalog, row, id, file):
    return RowError(problem, catalog=catalog, row=row, id=id, file=file)


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A row left out: its 0-based index, id, the file at fault and why."""

    row: int
    id: str
    file: str
    reason: str


@dataclasses.dataclass(frozen=True)
class CatalogRow:
    """One row of a catalogue, as read (files not opened yet)."""

    index: int  # 0-based data row (a CSV's line number is index + 2)
    id: str
    name: str
    label: str | None
    lightcurve: str | None  # absolute path
    spectrum: str | None  # absolute path
    values: tuple[float, ...]  # schema.ALL_COLS order; NaN where blank
    split: str | None = None  # 'train' | 'validation' | 'test' | None
    problem: str = ""  # a cell that could not be read (reported as a bad row)


@dataclasses.dataclass(frozen=True)
class Catalog:
    path: str
    rows: tuple[CatalogRow, ...]
    has_labels: bool
    has_split: bool

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)

    def __len__(self) -> int:
        return len(self.rows)


@dataclasses.dataclass(frozen=True)
class CatalogExample:
    """The builder's features of one row, plus which modalities it has.

    `features` holds what the builder writes for an object (id, name,
    spec_filename, label, raw_catalogue, and the features of each PRESENT
    modality: photometry, photometry_aux, raw_flux_mean, raw_flux_mad,
    raw_time_min, raw_time_max / spectra, raw_spectrum_mean,
    raw_spectrum_mad / metadata). An absent modality's features are left
    out (`objects.store_optional` gives the stored form of a config with
    optional modalities). `label` is the class index, -1 when the row has
    none.
    """

    row: int
    id: str
    label: int
    present: Mapping[str, bool]
    features: Mapping[str, object]
    split: str | None = None


# ------------------------------------------------------------------- reading
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


def _read_table(path: str, what: str):
    from astropy.table import Table

    if not os.path.exists(path):
        raise FileNotFoundError(path)
    kw = {}
    low = path.lower()
    if low.endswith(".csv"):
        kw["format"] = "ascii.csv"
    elif low.endswith((".vot", ".xml")):
        kw["format"] = "votable"
    try:
        return Table.read(path, **kw)
    except Exception as e:  # astropy raises many types for unreadable tables
        raise ValueError(f"unreadable {what} ({type(e).__name__}: {e})") from None


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
        table = _read_table(path, "catalogue table")
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
    folder = os.path.dirname(path)
    cell = {key: _cells(table, cols.get(key)) for key in (*FIXED, *schema.ALL_COLS)}
    rows, seen = [], {}
    for i in range(len(table)):
        oid = _text(cell[ID][i])
        if oid is None:
            raise CatalogError(f"catalogue {path}, row {i}: blank id")
        if oid in seen:
            raise CatalogError(
                f"catalogue {path}: id {oid!r} is in rows {seen[oid]} and {i}; "
                "ids must be unique"
            )
        seen[oid] = i
        problems = []
        values = []
        for c in schema.ALL_COLS:
            v, problem = _number(cell[c][i], c)
            values.append(v)
            if problem:
                problems.append(problem)
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
                values=tuple(values),
                split=split,
                problem="; ".join(problems),
            )
        )
    if not rows:
        raise CatalogError(f"catalogue {path} has no rows")
    return Catalog(
        path=path,
        rows=tuple(rows),
        has_labels=LABEL in cols,
        has_split=SPLIT in cols,
    )


# --------------------------------------------------------------- light curves
def _normalised_name(col: str) -> str:
    name = re.sub(r"[\(\[].*?[\)\]]", "", col).strip().lower()
    return re.sub(r"[\s\-]+", "_", name)


def _column(table, names: dict[str, str], choices: Sequence[str]) -> str | None:
    return next((names[c] for c in choices if c in names), None)


def read_light_curve_table(
    path: str | os.PathLike,
    *,
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    obj: str = "",
) -> np.ndarray:
    """(N, 3) float64 time, flux, flux error of a light-curve table.

    Column names are matched case-insensitively, ignoring a unit in brackets
    ("flux(mJy)" is "flux"); the first found of each list is used:
    time: hjd, bjd, jd, mjd, time, t (days; any zero point: only time
    differences are used); flux: flux with flux_err, flux_error, fluxerr,
    e_flux, sigma_flux; or, when there is no flux column, mag, magnitude with
    mag_err, mag_error, magerr, e_mag, sigma_mag, converted to
    flux = 10**(-0.4 (mag - mag_zero_point)) and
    error = flux * mag_err * ln(10) / 2.5. One band per file. A blank cell is
    an error (as is any non-finite value), naming the file.
    """
    path = os.fspath(path)
    try:
        table = _read_table(path, "light-curve table")
    except FileNotFoundError:
        raise release_io.ReleaseError(
            "light-curve file not found", file=path, obj=obj
        ) from None
    except ValueError as e:
        raise release_io.ReleaseError(str(e), file=path, obj=obj) from None
    names = {}
    for c in table.colnames:
        names.setdefault(_normalised_name(c), c)
    t = _column(table, names, TIME_COLUMNS)
    flux, flux_err = (
        _column(table, names, FLUX_COLUMNS),
        _column(table, names, FLUX_ERR_COLUMNS),
    )
    mag, mag_err = (
        _column(table, names, MAG_COLUMNS),
        _column(table, names, MAG_ERR_COLUMNS),
    )
    use_flux = flux is not None
    needed = [t, flux, flux_err] if use_flux else [t, mag, mag_err]
    if any(c is None for c in needed):
        raise release_io.ReleaseError(
            "light-curve table needs a time column (one of "
            f"{', '.join(TIME_COLUMNS)}) and flux + error ({', '.join(FLUX_COLUMNS)}"
            f"; {', '.join(FLUX_ERR_COLUMNS)}) or magnitude + error "
            f"({', '.join(MAG_COLUMNS)}; {', '.join(MAG_ERR_COLUMNS)}); it has "
            f"{', '.join(table.colnames)}",
            file=path,
            obj=obj,
        )

    def floats(col):
        column = table[col]
        try:
            values = np.asarray(column, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise release_io.ReleaseError(
                f"column {col} is not numeric ({e})", file=path, obj=obj
            ) from None
        mask = getattr(column, "mask", None)
        if mask is not None and np.any(mask):
            values = np.where(mask, np.nan, values)
        return values

    if use_flux:
        out = np.stack([floats(t), floats(flux), floats(flux_err)], axis=1)
    else:
        m, e = floats(mag), floats(mag_err)
        f = np.power(10.0, -0.4 * (m - mag_zero_point))
        out = np.stack([floats(t), f, f * e * np.log(10.0) / 2.5], axis=1)
    return out


def read_light_curve_file(
    path: str, *, mag_zero_point: float = DEFAULT_MAG_ZERO_POINT, obj: str = ""
) -> np.ndarray:
    """(N, 3) time, flux, flux error of a `.dat` (ASAS-SN) or any table file."""
    if path.lower().endswith(".dat"):
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise release_io.ReleaseError(
                "light-curve file not found", file=path, obj=obj
            ) from None
        except OSError as e:
            raise release_io.ReleaseError(
                f"unreadable light curve ({e})", file=path, obj=obj
            ) from None
        return release_io.parse_dat(raw, file=path, obj=obj)
    return read_light_curve_table(path, mag_zero_point=mag_zero_point, obj=obj)


# ------------------------------------------------------------------ one row
def process_row(
    row: CatalogRow,
    stats: NormalisationStats,
    *,
    catalog: str = "",
    require: Sequence[str] = (),
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
) -> CatalogExample:
    """The builder's features of one row; raises RowError for a bad row.

    require: modalities the row must have (a row without one is bad).
    """

    def bad(problem, file=catalog):
        return RowError(problem, catalog=catalog, row=row.index, id=row.id, file=file)

    if row.problem:
        raise bad(row.problem)
    label = -1
    if row.label is not None:
        if row.label not in schema.CLASSES:
            raise bad(
                f"unknown class {row.label!r}; known: {', '.join(schema.CLASSES)}"
            )
        label = schema.CLASSES.index(row.label)

    raw = np.asarray(row.values, dtype=np.float64)
    value = dict(zip(schema.ALL_COLS, raw, strict=True))
    meta_missing = [c for c in schema.META_COLS if not np.isfinite(value[c])]
    has_meta = len(meta_missing) < len(schema.META_COLS)
    if has_meta and meta_missing:
        raise bad(
            "blank or non-finite catalogue value(s) in "
            f"{', '.join(meta_missing)}; a row gives all "
            f"{len(schema.META_COLS)} metadata columns or none (no metadata)"
        )
    has_lc = row.lightcurve is not None
    if has_lc:
        photo_missing = [c for c in schema.PHOTO_COLS if not np.isfinite(value[c])]
        if photo_missing:
            raise bad(
                "blank or non-finite catalogue value(s) in "
                f"{', '.join(photo_missing)}, which a light curve needs (they "
                "become light-curve channels)"
            )
    present = {
        "photometry": has_lc,
        "spectra": row.spectrum is not None,
        "metadata": has_meta,
    }
    if not any(present.values()):
        raise bad("no modality: no lightcurve, no spectrum and no metadata columns")
    lacking = [m for m in require if not present[m]]
    if lacking:
        raise bad(
            f"lacks {' and '.join(lacking)} (here every row needs {', '.join(require)})"
        )

    info = stats.as_info()
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = preprocessing.normalise_catalogue(
            {c: value[c] for c in info["all_cols"]}, info
        )
    photo_idx, meta_idx = stats.column_slices()
    used = ([*photo_idx] if has_lc else []) + ([*meta_idx] if has_meta else [])
    nonfinite = [info["all_cols"][j] for j in used if not np.isfinite(norm[j])]
    if nonfinite:
        raise bad(
            "catalogue value(s) non-finite after the transforms (e.g. log10 of "
            f"a period <= 0): {', '.join(nonfinite)}"
        )

    features: dict[str, object] = {
        "id": row.id,
        "name": row.name,
        "spec_filename": os.path.basename(row.spectrum) if row.spectrum else "",
        "label": label,
        "raw_catalogue": raw,
    }
    if has_meta:
        features["metadata"] = norm[meta_idx].astype(np.float32)
    try:
        if has_lc:
            lc = read_light_curve_file(
                row.lightcurve, mag_zero_point=mag_zero_point, obj=row.id
            )
            try:
                features.update(
                    preprocessing.preprocess_light_curve(lc, norm[photo_idx])
                )
            except preprocessing.PreprocessingError as e:
                raise bad(str(e), row.lightcurve) from None
        if row.spectrum is not None:
            spec = release_io.read_spectrum(row.spectrum, obj=row.id)
            try:
                features.update(preprocessing.preprocess_spectrum(spec))
            except preprocessing.PreprocessingError as e:
                raise bad(str(e), row.spectrum) from None
    except release_io.ReleaseError as e:
        raise bad(e.problem, e.file) from None
    return CatalogExample(
        row=row.index,
        id=row.id,
        label=label,
        present=present,
        features=features,
        split=row.split,
    )


# ----------------------------------------------------------- many rows, pool
class WorkerFailure(errors.UserError, RuntimeError):
    """A preprocessing worker died or failed outside any one row's files."""


_WORKER: dict = {}


def _init_worker(kwargs):
    _WORKER.clear()
    _WORKER.update(kwargs)


def _work_one(row: CatalogRow):
    try:
        return process_row(row, **_WORKER), None
    except RowError as e:
        return None, e
    except Exception as e:  # a bug or a broken environment: stop, naming the row
        raise WorkerFailure(
            f"catalog {_WORKER.get('catalog', '')}, row {row.index} (id "
            f"{row.id!r}): unexpected {type(e).__name__}: {e}"
        ) from e


def _work_chunk(rows):
    return [_work_one(r) for r in rows]


POOL_MIN_ROWS = 512


def default_workers(n_rows: int) -> int:
    """Worker processes for n_rows: none below POOL_MIN_ROWS.

    Spawned workers take 1-2 s to start (numpy, astropy), about what 200
    rows with spectra or 1,000 without take in this process
    (benchmarks/catalog_preprocessing.py).
    """
    return min(os.cpu_count() or 1, 8) if n_rows >= POOL_MIN_ROWS else 0


def iter_processed(
    rows: Sequence[CatalogRow],
    stats: NormalisationStats,
    *,
    catalog: str = "",
    require: Sequence[str] = (),
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    num_workers: int | None = None,
) -> Iterator[tuple[CatalogRow, CatalogExample | None, RowError | None]]:
    """Yields (row, example | None, error | None) in row order.

    num_workers <= 1 works in this process; otherwise a spawn-started process
    pool (safe when JAX threads already run in the parent) works on chunks,
    with a bounded number in flight; results come back in row order.
    """
    kwargs = dict(
        stats=stats,
        catalog=catalog,
        require=tuple(require),
        mag_zero_point=mag_zero_point,
    )
    if num_workers is None:
        num_workers = default_workers(len(rows))
    if num_workers <= 1:
        for row in rows:
            try:
                yield row, process_row(row, **kwargs), None
            except RowError as e:
                yield row, None, e
        return
    size = max(1, min(32, len(rows) // (8 * num_workers)))
    chunks = iter([rows[i : i + size] for i in range(0, len(rows), size)])
    pool = cf.ProcessPoolExecutor(
        num_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(kwargs,),
    )
    pending = collections.deque()

    def submit():
        chunk = next(chunks, None)
        if chunk is not None:
            pending.append((chunk, pool.submit(_work_chunk, chunk)))

    try:
        for _ in range(4 * num_workers):
            submit()
        while pending:
            chunk, future = pending.popleft()
            try:
                results = future.result()
            except cf.process.BrokenProcessPool as e:
                raise WorkerFailure(
                    "a preprocessing worker process died (killed, out of memory "
                    f"or crashed) while reading rows {chunk[0].index} to "
                    f"{chunk[-1].index} of {catalog}: {e}"
                ) from None
            submit()
            for row, (example, error) in zip(chunk, results, strict=True):
                yield row, example, error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def allowed_bad(n_rows: int, max_bad_fraction: float) -> int:
    """How many of n_rows may be bad: floor(fraction * n), as the builder."""
    return math.floor(max_bad_fraction * n_rows + 1e-9)


@dataclasses.dataclass(frozen=True)
class Preprocessed:
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
    num_workers: int | None = None,
    progress: bool = True,
) -> Preprocessed:
    """Every row of a catalogue through the builder's preprocessing.

    Strict by default: the first bad row (in row order) raises its RowError.
    With skip_bad, bad rows are collected (and written to bad_rows_path, a
    CSV of row, id, file, reason, when given, also when the call then fails);
    more than max_bad_fraction of the rows bad (or all of them) raises
    CatalogError.
    """
    from tqdm import tqdm

    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    if not isinstance(catalog, Catalog):
        catalog = read_catalog(catalog)
    unknown = [m for m in require if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {MODALITIES}")
    examples, bad = [], []
    bar = tqdm(
        total=len(catalog), desc=f"catalog {os.path.basename(catalog.path)}",
        disable=not progress, unit="obj",
    )  # fmt: skip
    with bar:
        for _, example, error in iter_processed(
            catalog.rows, stats, catalog=catalog.path, require=require,
            mag_zero_point=mag_zero_point, num_workers=num_workers,
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


# --------------------------------------------------------- splits and stats
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


def stats_of_rows(rows: Sequence[CatalogRow], source: str = "") -> NormalisationStats:
    """Normalisation statistics of rows' catalogue values (the train rows).

    A column's blank or NaN values are left out of its statistics.
    """
    table = {
        c: np.array([r.values[j] for r in rows], np.float64)
        for j, c in enumerate(schema.ALL_COLS)
    }
    return NormalisationStats.from_table(table, source=source)
