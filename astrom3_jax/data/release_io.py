"""Readers for the raw AstroM3 release (Hub dataset AstroMLCore/AstroM3Dataset).

A release root (Rizhko & Bloom 2024, arXiv:2411.08842) holds photometry.zip
(members vardb_files/<name>.dat), spectra/<CLASS>/<spec_filename> (LAMOST
FITS, maybe .gz) and splits/<sub>/<seed>/{train,val,test}.csv + info.json.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Sequence

import numpy as np

from astrom3_jax import errors
from astrom3_jax.data import schema, spectrum_fits

INFO_KEYS = (
    "classes",
    "meta_cols",
    "photo_cols",
    "all_cols",
    "metadata_func",
    "mean",
    "std",
)


class ReleaseError(errors.UserError, ValueError):
    """A raw file is missing, unreadable or holds values we refuse to use.

    Every reader here raises it. Its message names the file, the object and
    the problem, so one bad file in 21k is easy to find.
    """

    def __init__(self, problem: str, *, file: str | os.PathLike = "", obj: str = ""):
        self.problem, self.file, self.obj = problem, os.fspath(file), obj
        where = []
        if obj:
            where.append(f"object {obj}")
        if self.file:
            where.append(f"file {self.file}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)

    def __reduce__(self):  # survives multiprocessing pickling
        return (_rebuild_error, (self.problem, self.file, self.obj))


def _rebuild_error(problem, file, obj):
    return ReleaseError(problem, file=file, obj=obj)


# ----------------------------------------------------------------- light curves
def dat_member(name: str) -> str:
    """Zip member of an object's light curve: spaces are removed from the name."""
    return f"vardb_files/{name.replace(' ', '')}.dat"


def _starts_with_number(line: str) -> bool:
    fields = line.split(maxsplit=1)
    if not fields:
        return False
    try:
        float(fields[0])
    except ValueError:
        return False
    return True


def parse_dat(data: bytes | str, *, file: str = "", obj: str = "") -> np.ndarray:
    """(N, 3) float64 of HJD, FLUX, FLUX_ERR from an ASAS-SN .dat text.

    Data rows hold five whitespace-separated floats: HJD MAG MAG_ERR FLUX
    FLUX_ERR. Header lines are recognised by content, not counted: every line
    before the first row that starts with a number is a header (the Hub files
    have two, a comment and the column names), so a file without header keeps
    all its rows. After the first data row, every non-blank line must be a
    data row.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError as e:
            raise ReleaseError(
                f"not a text light curve ({e})", file=file, obj=obj
            ) from None
    lines = data.splitlines()
    first = next(
        (i for i, ln in enumerate(lines) if _starts_with_number(ln)), len(lines)
    )
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if i >= first and ln.strip()]
    rows = [ln for _, ln in numbered]
    if not rows:
        return np.empty((0, 3))
    try:  # fast path: NumPy's C parser over the whole file (twice str.split's speed)
        values = np.loadtxt(io.StringIO("\n".join(rows)), comments=None, ndmin=2)
        if values.shape[1] == 5:
            return values[:, [0, 3, 4]]
    except ValueError:
        pass
    parsed = []  # slow path: find the bad line
    for number, line in numbered:
        fields = line.split()
        try:
            parsed.append([float(x) for x in fields])
        except ValueError as e:
            raise ReleaseError(
                f"non-numeric value in light curve line {number} ({e})",
                file=file,
                obj=obj,
            ) from None
        if len(fields) != 5:
            raise ReleaseError(
                f"line {number} has {len(fields)} columns, expected 5 "
                "(HJD MAG MAG_ERR FLUX FLUX_ERR)",
                file=file,
                obj=obj,
            )
    return np.array(parsed, dtype=np.float64).reshape(-1, 5)[:, [0, 3, 4]]


def read_light_curve(
    archive: zipfile.ZipFile, name: str, *, obj: str = ""
) -> np.ndarray:
    """(N, 3) float64 HJD, FLUX, FLUX_ERR of object `name` from photometry.zip."""
    member = dat_member(name)
    where = f"{archive.filename}:{member}"
    try:
        raw = archive.read(member)
    except KeyError:
        raise ReleaseError(
            "light curve missing from the zip", file=where, obj=obj or name
        ) from None
    except Exception as e:  # bad CRC, zlib.error, truncated data, encryption...
        raise ReleaseError(
            f"corrupt zip member ({type(e).__name__}: {e})",
            file=where,
            obj=obj or name,
        ) from None
    return parse_dat(raw, file=where, obj=obj or name)


def open_photometry(path: str | os.PathLike) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ReleaseError("photometry.zip not found", file=path) from None
    except (zipfile.BadZipFile, OSError) as e:
        raise ReleaseError(f"not a readable zip archive ({e})", file=path) from None


# ---------------------------------------------------------------------- spectra
def read_spectrum(path: str | os.PathLike, *, obj: str = "") -> np.ndarray:
    """(M, 3) float64 wavelength, flux, inverse variance of a LAMOST LRS file.

    One HDU: a 2-D primary image, row 0 flux, row 1 inverse variance, the
    wavelength of pixel i is 10**(COEFF0 + i*COEFF1), i < NAXIS1. Two HDUs:
    HDU 1 is a binary table whose first row holds flux, inverse variance and
    wavelength, in that field order. Plain or gzipped. These layouts are
    read with NumPy (`spectrum_fits`, about 30 times faster than astropy on
    a binary table); any other file goes to astropy, which reads it or says
    what is wrong.
    """
    if not os.path.exists(path):
        raise ReleaseError("spectrum file not found", file=path, obj=obj)
    try:
        with open(path, "rb") as f:
            fast = spectrum_fits.arrays(f.read())
    except OSError as e:
        raise ReleaseError(f"unreadable file ({e})", file=path, obj=obj) from None
    if fast is not None:
        return np.stack(fast, axis=1)
    return _read_spectrum_astropy(path, obj)


def _read_spectrum_astropy(path, obj) -> np.ndarray:
    """The general reader (and the one that words errors): astropy.io.fits."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdus:
            n = len(hdus)
            if n == 1:
                head, image = hdus[0].header, hdus[0].data
                if image is None or image.ndim != 2 or image.shape[0] < 2:
                    shape = None if image is None else image.shape
                    raise ReleaseError(
                        f"one-HDU layout needs a 2-D image with >= 2 rows, "
                        f"got shape {shape}",
                        file=path,
                        obj=obj,
                    )
                for key in ("COEFF0", "COEFF1", "NAXIS1"):
                    if key not in head:
                        raise ReleaseError(
                            f"header key {key} missing", file=path, obj=obj
                        )
                wave = spectrum_fits.log_linear_wavelength(
                    float(head["COEFF0"]), float(head["COEFF1"]), int(head["NAXIS1"])
                )
                flux, ivar = image[0], image[1]
            elif n == 2:
                table = hdus[1].data
                if table is None or len(table) == 0 or len(table.columns) < 3:
                    raise ReleaseError(
                        "two-HDU layout needs a binary table with flux, ivar, "
                        "wavelength",
                        file=path,
                        obj=obj,
                    )
                row = table[0]
                flux, ivar, wave = row[0], row[1], row[2]
            else:
                raise ReleaseError(f"{n} HDUs; expected 1 or 2", file=path, obj=obj)
            columns = [np.asarray(a, np.float64).ravel() for a in (wave, flux, ivar)]
            if len({len(c) for c in columns}) != 1:
                raise ReleaseError(
                    "wavelength, flux and ivar differ in length", file=path, obj=obj
                )
    except ReleaseError:
        raise
    except Exception as e:  # astropy raises many types for truncated/corrupt files
        raise ReleaseError(
            f"unreadable FITS ({type(e).__name__}: {e})", file=path, obj=obj
        ) from None
    return np.stack(columns, axis=1)


def spectrum_path(root: str | os.PathLike, target: str, spec_filename: str) -> str:
    return os.path.join(root, "spectra", target, spec_filename)


# ----------------------------------------------------------------- splits, info
def read_split_csv(
    path: str | os.PathLike,
    numeric_cols: Sequence[str] = schema.ALL_COLS,
    text_cols: Sequence[str] = schema.ID_COLS,
) -> list[dict]:
    """Rows of a split CSV: text columns as str, numeric columns as float.

    Extra columns are kept as text. A blank numeric cell (how pandas writes a
    missing value) becomes nan, so the builder reports that object as bad
    rather than the whole file. A missing column is an error naming the file;
    a cell that is neither blank nor a number names the row's object.
    """
    if not os.path.exists(path):
        raise ReleaseError("split CSV not found", file=path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in (*text_cols, *numeric_cols) if c not in header]
        if missing:
            raise ReleaseError(f"CSV lacks column(s) {', '.join(missing)}", file=path)
        rows = []
        for line, row in enumerate(reader, start=2):
            obj = row.get("name") or f"line {line}"
            for c in numeric_cols:
                if row[c] is not None and not row[c].strip():
                    row[c] = float("nan")
                    continue
                try:
                    row[c] = float(row[c])
                except (TypeError, ValueError):
                    raise ReleaseError(
                        f"column {c} is not a number: {row[c]!r} (CSV line {line})",
                        file=path,
                        obj=obj,
                    ) from None
            rows.append(row)
    return rows


def read_info(path: str | os.PathLike) -> dict:
    """info.json of one split folder, checked for the keys and lengths we use."""
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise ReleaseError("info.json not found", file=path) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ReleaseError(f"unreadable info.json ({e})", file=path) from None
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ReleaseError(f"info.json lacks key(s) {', '.join(missing)}", file=path)
    n = len(info["all_cols"])
    if len(info["mean"]) != n or len(info["std"]) != n:
        raise ReleaseError("mean/std length differs from all_cols", file=path)
    if list(info["all_cols"]) != list(info["photo_cols"]) + list(info["meta_cols"]):
        raise ReleaseError(
            "all_cols is not photo_cols followed by meta_cols", file=path
        )
    std = np.asarray(info["std"], float)
    if not np.all(np.isfinite(std) & (std > 0)) or not np.all(
        np.isfinite(info["mean"])
    ):
        bad = [
            c
            for c, s in zip(info["all_cols"], std, strict=True)
            if not (np.isfinite(s) and s > 0)
        ]
        raise ReleaseError(f"non-finite mean or non-positive std for {bad}", file=path)
    return info


def split_folder(root: str | os.PathLike, subset: str, seed: int) -> str:
    return os.path.join(root, "splits", subset, str(seed))
