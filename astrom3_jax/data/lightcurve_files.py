"""Reads one light-curve file: an ASAS-SN `.dat` or any table astropy reads.

The result is the (N, 3) time, flux, flux error array the builder's light-
curve preprocessing takes; magnitudes are converted to fluxes (mJy, AB).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from astrom3_jax.data import release_io
from astrom3_jax.data.catalog_tables import read_table

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
        table = read_table(path, "light-curve table")
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
