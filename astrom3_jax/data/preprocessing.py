"""Build-time preprocessing of one object, as the published models saw it.

Pure numpy, following the published code (Rizhko & Bloom 2024,
arXiv:2411.08842). Computation is float64 throughout (the raw readers return
float64); results are cast to float32 once, at the end, as the published code
does. Invalid input raises `PreprocessingError` instead of
silently producing zeros, NaN or inf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from astrom3_jax.data import schema


class PreprocessingError(ValueError):
    """The values of one object cannot be normalised (too short, flat, NaN...)."""


# Fewest distinct points a light curve may have (MAD and time span need 2).
MIN_LIGHT_CURVE_POINTS = 2


def mad(x: np.ndarray) -> np.ndarray:
    """Median absolute deviation with scale 1: median(|x - median(x)|)."""
    return np.median(np.abs(x - np.median(x)))


# -------------------------------------------------------------------- catalogue
def _absolute(mag, parallax):
    # m - 10 + 5 log10(parallax [mas]); parallax <= 0 is replaced by 1.
    return mag - 10 + 5 * np.log10(np.where(parallax <= 0, 1, parallax))


_TRANSFORMS = {
    "abs": _absolute,
    "cos": lambda x, _: np.cos(np.radians(x)),
    "sin": lambda x, _: np.sin(np.radians(x)),
    "log": lambda x, _: np.log10(x),
}


def transform_catalogue(
    table: Mapping[str, np.ndarray],
    metadata_func: Mapping[str, Sequence[str]] = schema.METADATA_FUNC,
) -> dict[str, np.ndarray]:
    """Applies info.json's `metadata_func` column transforms.

    `table` maps column name -> values (scalars or arrays). Transforms run in
    the order of `metadata_func`'s keys; 'abs' uses the untransformed
    parallax. Returns a new dict with every input column, transformed ones
    replaced (float64).
    """
    out = {k: np.asarray(v, dtype=np.float64) for k, v in table.items()}
    parallax = out.get("parallax")
    for kind, cols in metadata_func.items():
        if kind not in _TRANSFORMS:
            raise ValueError(
                f"unknown metadata_func transform {kind!r}; "
                f"known: {sorted(_TRANSFORMS)}"
            )
        if kind == "abs" and parallax is None:
            raise ValueError("metadata_func 'abs' needs the parallax column")
        for c in cols:
            if c not in out:
                raise ValueError(
                    f"metadata_func names column {c!r}, which the table lacks"
                )
            with np.errstate(divide="ignore", invalid="ignore"):
                out[c] = _TRANSFORMS[kind](out[c], parallax)
    return out


def catalogue_stats(
    table: Mapping[str, np.ndarray],
    metadata_func: Mapping[str, Sequence[str]] = schema.METADATA_FUNC,
    columns: Sequence[str] = schema.ALL_COLS,
) -> tuple[np.ndarray, np.ndarray]:
    """info.json's `mean` and `std` (population) of the transformed columns."""
    t = transform_catalogue(table, metadata_func)
    mat = np.stack([t[c] for c in columns], axis=1)
    return mat.mean(axis=0), mat.std(axis=0)


def normalise_catalogue(table: Mapping[str, np.ndarray], info: Mapping) -> np.ndarray:
    """Transformed, z-scored catalogue columns in info['all_cols'] order.

    Works on one row (scalars -> shape (C,)) or many (arrays -> (N, C)).
    """
    t = transform_catalogue(table, info["metadata_func"])
    mat = np.stack([t[c] for c in info["all_cols"]], axis=-1)
    return (mat - np.asarray(info["mean"], np.float64)) / np.asarray(
        info["std"], np.float64
    )


# ------------------------------------------------------------------ light curve
def _check_finite(name: str, values: np.ndarray, columns: Sequence[str] = ()):
    bad = ~np.isfinite(values)
    if bad.any():
        if columns and values.ndim >= 1:
            which = sorted({columns[j] for j in np.nonzero(bad)[-1]})
            raise PreprocessingError(
                f"{name}: non-finite value(s) in {', '.join(which)}"
            )
        raise PreprocessingError(f"{name}: {int(bad.sum())} non-finite value(s)")


def preprocess_light_curve(
    lc: np.ndarray, photo_norm: np.ndarray
) -> dict[str, np.ndarray]:
    """(N, 3) HJD, flux, flux error -> the stored, uncropped light curve.

    Steps: drop exact duplicate rows; sort by time; flux -> (flux - mean)/MAD,
    error -> error/MAD; delta_t = (t_max - t_min)/365; time min-max scaled to
    [0, 1]. `photo_norm` are the 4 normalised photo_cols; the 6 auxiliary
    values are those, log10(MAD) and delta_t.

    Returns photometry (N', 3) float32, photometry_aux (6,) float32 and the
    float64 raw values raw_flux_mean, raw_flux_mad, raw_time_min, raw_time_max.
    """
    lc = np.asarray(lc, dtype=np.float64)
    if lc.ndim != 2 or lc.shape[1] != 3:
        raise PreprocessingError(f"light curve must be (N, 3), got {lc.shape}")
    _check_finite("light curve", lc, ("HJD", "FLUX", "FLUX_ERR"))
    x = np.unique(lc, axis=0)  # drops exact duplicates (and sorts rows)
    # Stable: rows sharing an HJD keep np.unique's (flux, error) order; the
    # default (SIMD) quicksort may permute ties between runs/machines.
    x = x[np.argsort(x[:, 0], kind="stable")]
    if len(x) < MIN_LIGHT_CURVE_POINTS:
        raise PreprocessingError(
            f"light curve has {len(x)} distinct point(s); need at least "
            f"{MIN_LIGHT_CURVE_POINTS}"
        )
    t, flux, err = x[:, 0], x[:, 1], x[:, 2]
    mean = flux.mean()
    scale = mad(flux)
    if not scale > 0:
        raise PreprocessingError(
            "light-curve flux has zero MAD (flat or mostly constant)"
        )
    t_min, t_max = t.min(), t.max()
    if not t_max > t_min:
        raise PreprocessingError("light-curve times span zero days")
    scaled = np.stack(
        [(t - t_min) / (t_max - t_min), (flux - mean) / scale, err / scale], axis=1
    )
    photo_norm = np.asarray(photo_norm, dtype=np.float64).reshape(-1)
    aux = np.concatenate([photo_norm, [np.log10(scale), (t_max - t_min) / 365]])
    _check_finite("light-curve auxiliary values", aux, schema.PHOTOMETRY_AUX)
    out = {
        "photometry": scaled.astype(np.float32),
        "photometry_aux": aux.astype(np.float32),
        "raw_flux_mean": np.float64(mean),
        "raw_flux_mad": np.float64(scale),
        "raw_time_min": np.float64(t_min),
        "raw_time_max": np.float64(t_max),
    }
    _check_finite("normalised light curve", out["photometry"])
    return out


# --------------------------------------------------------------------- spectrum
def preprocess_spectrum(spec: np.ndarray) -> dict[str, np.ndarray]:
    """(M, 3) wavelength, flux, inverse variance -> (3, 2575) float32.

    Linear interpolation of flux and ivar onto 3850, 3852, ..., 8998 A
    (held constant beyond the ends); mean of the interpolated flux and MAD
    of its non-zero values; channels (flux - mean)/MAD, ivar/MAD, log10(MAD).
    """
    spec = np.asarray(spec, dtype=np.float64)
    if spec.ndim != 2 or spec.shape[1] != 3 or len(spec) < 2:
        raise PreprocessingError(f"spectrum must be (M >= 2, 3), got {spec.shape}")
    _check_finite("spectrum", spec, ("wavelength", "flux", "ivar"))
    wave = spec[:, 0]
    if not np.all(np.diff(wave) > 0):
        raise PreprocessingError("spectrum wavelengths are not strictly increasing")
    grid = schema.WAVELENGTH_GRID
    flux = np.interp(grid, wave, spec[:, 1])
    ivar = np.interp(grid, wave, spec[:, 2])
    mean = np.mean(flux)
    nonzero = flux[flux != 0]
    if nonzero.size == 0:
        raise PreprocessingError("spectrum flux is zero everywhere on the grid")
    scale = mad(nonzero)
    if not scale > 0:
        raise PreprocessingError("spectrum flux has zero MAD")
    out = np.vstack(
        [(flux - mean) / scale, ivar / scale, np.full_like(flux, np.log10(scale))]
    )
    out = out.astype(np.float32)
    _check_finite("normalised spectrum", out)
    return {
        "spectra": out,
        "raw_spectrum_mean": np.float64(mean),
        "raw_spectrum_mad": np.float64(scale),
    }
