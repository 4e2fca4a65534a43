"""Reads one light-curve file, whatever its layout, into one clean band.

Layouts are recognised from the file, with no option: the release's `.dat`
(read by release_io.parse_dat, unchanged: no cleaning), ASAS-SN Sky Patrol
v1 and v2 and variable-star database CSVs, any table with a header (comma,
tab, semicolon, `|` or whitespace; see lightcurve_text), headerless
time, mag, mag_err tables and FITS/VOTable/ECSV tables. The columns are
found by name (below); the catalogue's `lc_columns` cell names them for a
file that lacks or mislabels them. Band choice and cleaning:
lightcurve_cleaning. The result is the (N, 3) time, flux, flux error array
of the builder's light-curve preprocessing (flux in mJy) and its record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from astrom3_jax.data import release_io
from astrom3_jax.data.catalog_tables import read_table
from astrom3_jax.data.lightcurve_cleaning import (
    CleaningError,
    LightCurveRecord,
    Measurements,
    clean,
    unchecked_record,
)
from astrom3_jax.data.lightcurve_text import (
    NAME_HINT,
    LayoutError,
    TextTable,
    is_number,
    parse_names,
    parse_text_table,
)

# Accepted column names (lower case, a unit in brackets dropped: "flux(mJy)"
# is "flux", spaces and hyphens as "_"); the first one found wins.
TIME_COLUMNS = ("hjd", "bjd", "jd", "mjd", "time", "t")
FLUX_COLUMNS = ("flux",)
FLUX_ERR_COLUMNS = ("flux_err", "flux_error", "fluxerr", "e_flux", "sigma_flux")
MAG_COLUMNS = ("mag", "magnitude")
MAG_ERR_COLUMNS = ("mag_err", "mag_error", "magerr", "e_mag", "sigma_mag")
BAND_COLUMNS = ("band", "filter", "phot_filter", "passband")
QUALITY_COLUMNS = ("quality",)
LIMIT_FLAG_COLUMNS = ("upper_limit", "is_upper_limit", "uplim")
SKIP_NAMES = ("-", "_", "skip")
# Magnitude m with error e -> flux 10**(-0.4 (m - ZP)), error flux * e * ln10/2.5.
# ZP 16.4 puts the flux in mJy on the AB scale (3631 Jy at m = 0), the unit of
# ASAS-SN's FLUX column, so that log10(MAD), the one scale-dependent
# light-curve channel, is on the scale the models were trained on.
DEFAULT_MAG_ZERO_POINT = 16.4
# Layouts named in the record, by the (normalised) header names they hold.
LAYOUTS = (
    ("skypatrol_v2", {"jd", "flux", "mag", "limit", "image_id", "quality",
                      "phot_filter"}),
    ("skypatrol_v1", {"hjd", "ut_date", "camera", "limit", "mag", "flux",
                      "filter"}),
    ("vardb_csv", {"hjd", "camera", "mag", "mag_err", "flux", "flux_err"}),
)  # fmt: skip
ASTROPY_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".vot", ".xml", ".ecsv")
_MISSING = {"", "nan", "null", "none", "na", "n/a", "--", "-"}
_TRUE = {"1", "t", "true", "y", "yes"}


def _normalised_name(col: str) -> str:
    name = re.sub(r"[\(\[].*?[\)\]]", "", col).strip().lower()
    return re.sub(r"[\s\-]+", "_", name)


def _numbers(table: TextTable, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Column j as floats (NaN where blank) and where it held a '<'/'>' limit."""
    cells = table.columns[j]
    try:
        return np.array(cells, dtype=np.float64), np.zeros(len(cells), dtype=bool)
    except ValueError:
        pass
    values = np.empty(len(cells))
    limit = np.zeros(len(cells), dtype=bool)
    for i, cell in enumerate(cells):
        text = cell.strip()
        if text[:1] in ("<", ">"):
            limit[i], text = True, text[1:].strip()
        if text.lower() in _MISSING:
            values[i] = np.nan
        elif is_number(text):
            values[i] = float(text)
        else:
            raise LayoutError(
                f"column {table.names[j]}, line {table.lines[i]}: {cell!r} is not "
                "a number; fix the cell (a blank cell drops the row)"
            )
    return values, limit


def _layout(table: TextTable, names: set[str]) -> str:
    if table.header == "none":
        return "headerless"
    if table.header == "named":
        return "named_columns"
    return next((n for n, need in LAYOUTS if need <= names), "table")


def measurements(table: TextTable) -> Measurements:
    """A table's columns by role (see the *_COLUMNS lists)."""
    index: dict[str, int] = {}
    for j, c in enumerate(table.names):
        if c.strip().lower() not in SKIP_NAMES:
            index.setdefault(_normalised_name(c), j)

    def find(choices: Sequence[str]) -> int | None:
        return next((index[c] for c in choices if c in index), None)

    t = find(TIME_COLUMNS)
    flux, flux_err = find(FLUX_COLUMNS), find(FLUX_ERR_COLUMNS)
    mag, mag_err = find(MAG_COLUMNS), find(MAG_ERR_COLUMNS)
    kind = "flux" if flux is not None and flux_err is not None else "mag"
    value, error = (flux, flux_err) if kind == "flux" else (mag, mag_err)
    if t is None or value is None or error is None:
        has = " | ".join(table.names)
        need = "time column" if t is None else "flux + error or mag + error columns"
        raise LayoutError(
            f"no {need} among its columns ({has}); name them "
            f"{', '.join(TIME_COLUMNS[:3])}.. / flux, flux_err / mag, mag_err in "
            f"a header, or {NAME_HINT}"
        )
    time, _ = _numbers(table, t)
    v, v_limit = _numbers(table, value)
    e, _ = _numbers(table, error)
    nondetection = v_limit
    mags = {}
    for key, j in (("mag", mag), ("mag_err", mag_err)):
        if j is not None:
            mags[key], limit = _numbers(table, j)
            nondetection = nondetection | (limit if key == "mag" else False)
    flag = find(LIMIT_FLAG_COLUMNS)
    if flag is not None:
        cells = np.char.lower(np.array(table.columns[flag], dtype=str))
        nondetection = nondetection | np.isin(cells, list(_TRUE))

    def text(choices):
        j = find(choices)
        return None if j is None else np.array(table.columns[j], dtype=str)

    return Measurements(
        time=time, value=v, error=e, kind=kind, nondetection=nondetection,
        mag=mags.get("mag"), mag_err=mags.get("mag_err"),
        band=text(BAND_COLUMNS), quality=text(QUALITY_COLUMNS),
        layout=_layout(table, set(index)),
    )  # fmt: skip


def _cell(value) -> str:
    """A FITS/VOTable/ECSV value as text (floats exactly, by repr)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return repr(value) if isinstance(value, float) else str(value).strip()


def _astropy_table(path: str, names: Sequence[str] | None) -> TextTable:
    try:
        table = read_table(path, "light-curve table")
    except ValueError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LayoutError(f"{first}; check the file (FITS, VOTable, ECSV)") from None
    columns = []
    for c in table.colnames:
        col = table[c]
        mask = np.ma.getmaskarray(col) if hasattr(col, "mask") else None
        cells = [_cell(v) for v in np.asarray(col).tolist()]
        if mask is not None and mask.ndim == 1:
            cells = ["" if m else v for v, m in zip(cells, mask, strict=True)]
        columns.append(tuple(cells))
    own = list(table.colnames) if names is None else list(names)
    if len(own) > len(columns):
        raise LayoutError(
            f"lc_columns names {len(own)} columns but the table has {len(columns)}"
        )
    return TextTable(
        names=tuple(own), columns=tuple(columns[: len(own)]),
        lines=tuple(range(1, len(table) + 1)),
        header="named" if names is not None else "header", delimiter="",
    )  # fmt: skip


def _is_release_dat(path: str, text: str) -> bool:
    """A `.dat` in the release's layout: 5 columns, header (if any) as theirs."""
    if not path.lower().endswith(".dat"):
        return False
    head = None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if is_number(fields[0]):
            ok = len(fields) == 5
            return ok and (head is None or len(head) != 5 or [
                h.lower() for h in head] == ["hjd", "mag", "mag_err", "flux",
                                             "flux_err"])  # fmt: skip
        head = line.lstrip("#").split()
    return True  # no data row: parse_dat says so


def _read_text(path: str) -> tuple[bytes, str]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise LayoutError(f"unreadable ({e.strerror or e})") from None
    if b"\x00" in raw[:4096]:
        raise LayoutError(
            "is not a text table (binary content); give a CSV, tab- or "
            "space-separated table, or a FITS, VOTable or ECSV table"
        )
    try:
        return raw, raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw, raw.decode("latin-1")


def read_light_curve(
    path: str | os.PathLike,
    *,
    band: str | None = None,
    columns: str | Sequence[str] | None = None,
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    obj: str = "",
    table_only: bool = False,
) -> tuple[np.ndarray, LightCurveRecord]:
    """(N, 3) float64 time, flux, flux error of one band, and its record.

    band: the band to use (else V, else g, else the most populated);
    columns: the file's column names in order (an lc_columns cell) in place
    of its header. Problems raise ReleaseError naming the file, in one line.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise release_io.ReleaseError(
            "light-curve file not found; check the catalogue's lightcurve path "
            "(relative paths start at the catalogue's folder)",
            file=path, obj=obj,
        )  # fmt: skip
    try:
        names = parse_names(columns) if isinstance(columns, str) else columns
        if path.lower().endswith(ASTROPY_SUFFIXES):
            table = _astropy_table(path, names)
        else:
            raw, text = _read_text(path)
            if names is None and not table_only and _is_release_dat(path, text):
                lc = release_io.parse_dat(raw, file=path, obj=obj)
                return lc, unchecked_record(len(lc), "asassn_dat", band or "")
            table = parse_text_table(text, names)
        return clean(measurements(table), band=band, mag_zero_point=mag_zero_point)
    except (LayoutError, CleaningError) as e:
        raise release_io.ReleaseError(str(e), file=path, obj=obj) from None


def read_light_curve_table(
    path: str | os.PathLike,
    *,
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    obj: str = "",
) -> np.ndarray:
    """(N, 3) time, flux, flux error of a table (never read as a release .dat)."""
    return read_light_curve(
        path, mag_zero_point=mag_zero_point, obj=obj, table_only=True
    )[0]


def read_light_curve_file(
    path: str, *, mag_zero_point: float = DEFAULT_MAG_ZERO_POINT, obj: str = ""
) -> np.ndarray:
    """(N, 3) time, flux, flux error of a `.dat` (ASAS-SN) or any table file."""
    return read_light_curve(path, mag_zero_point=mag_zero_point, obj=obj)[0]
