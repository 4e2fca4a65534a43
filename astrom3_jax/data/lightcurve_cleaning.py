"""One band of a light curve's measurements, cleaned, as the model's input.

`clean` picks the band (the catalogue's choice, else V, else g, else the
band with the most usable points), drops unusable rows, each counted once
under the first reason that applies (in the order of DROP_REASONS), and
converts magnitudes to fluxes. Cameras are not aligned: the release's light
curves, which the models learnt from, mix ASAS-SN cameras as they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrom3_jax.data.preprocessing import MIN_LIGHT_CURVE_POINTS

# Default band order: ASAS-SN V (the release's band), then ASAS-SN g.
PREFERRED_BANDS = ("V", "g")
# Dropped rows, by reason, in the order they are tested.
DROP_REASONS = (
    "other_band",  # not the band used
    "quality",  # flagged bad (Sky Patrol v2 quality B)
    "nondetection",  # an upper limit: '>' magnitude, '<' flux, a limit flag
    "sentinel",  # 99.99-style placeholder magnitude or error, -99 and the like
    "missing",  # blank or non-finite time, value or band
    "bad_error",  # error <= 0 or non-finite
    "duplicate",  # a time already used (the first row in the file is kept)
)
_CODE = {reason: i + 1 for i, reason in enumerate(DROP_REASONS)}
MAG_SENTINEL = 90.0  # |magnitude| or |magnitude error| >= this is a placeholder
FLUX_SENTINELS = (99.99, 99.999, 999.99, -99.0, -99.99, -999.0, -9999.0)


class CleaningError(ValueError):
    """The file's measurements give no usable light curve; says what to do."""


@dataclasses.dataclass(frozen=True)
class Measurements:
    """A light-curve file's rows as read (every row, nothing dropped yet)."""

    time: np.ndarray
    value: np.ndarray  # flux (kind 'flux') or magnitude (kind 'mag')
    error: np.ndarray
    kind: str
    nondetection: np.ndarray  # bool
    mag: np.ndarray | None = None  # the magnitude columns, also when flux is used
    mag_err: np.ndarray | None = None
    band: np.ndarray | None = None  # str per row; None: the file has no band
    quality: np.ndarray | None = None  # str per row
    layout: str = "table"


@dataclasses.dataclass(frozen=True)
class LightCurveRecord:
    """What was used of one star's light-curve file (predictions.csv can
    hold it: `as_dict`). band is '' when neither the file nor the catalogue
    names one."""

    band: str
    n_points: int
    layout: str
    dropped_other_band: int = 0
    dropped_quality: int = 0
    dropped_nondetection: int = 0
    dropped_sentinel: int = 0
    dropped_missing: int = 0
    dropped_bad_error: int = 0
    dropped_duplicate: int = 0

    @property
    def dropped(self) -> int:
        return sum(getattr(self, f"dropped_{r}") for r in DROP_REASONS)

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(LightCurveRecord))


def unchecked_record(n_points: int, layout: str, band: str = "") -> LightCurveRecord:
    """The record of a file used as it is (the release's .dat)."""
    return LightCurveRecord(band=band, n_points=n_points, layout=layout)


def _reasons(m: Measurements) -> np.ndarray:
    """Per row: 0 (usable) or the code of the first reason, band aside."""
    code = np.zeros(len(m.time), dtype=np.int8)

    def mark(mask, reason):
        code[(code == 0) & mask] = _CODE[reason]

    if m.quality is not None:
        mark(np.char.upper(m.quality.astype(str)) == "B", "quality")
    mark(m.nondetection, "nondetection")
    with np.errstate(invalid="ignore"):
        sentinel = np.zeros(len(code), dtype=bool)
        for col in (m.mag, m.mag_err):
            if col is not None:
                sentinel |= np.abs(col) >= MAG_SENTINEL
        if m.kind == "flux" and m.mag is None:
            for col in (m.value, m.error):
                sentinel |= np.isclose(col[:, None], FLUX_SENTINELS).any(axis=1)
        mark(sentinel, "sentinel")
        missing = ~np.isfinite(m.time) | ~np.isfinite(m.value)
        if m.band is not None:
            missing |= m.band == ""
        mark(missing, "missing")
        mark(~(np.isfinite(m.error) & (m.error > 0)), "bad_error")
    return code


def _first_times(time: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mask of `rows` whose time is the first of its value among `rows`."""
    keep = np.zeros(len(time), dtype=bool)
    idx = np.nonzero(rows)[0]
    _, first = np.unique(time[idx], return_index=True)
    keep[idx[first]] = True
    return keep


def _match(band: str, bands: list[str]) -> str | None:
    if band in bands:
        return band
    same = [b for b in bands if b.lower() == band.lower()]
    return same[0] if len(same) == 1 else None


def choose_band(m: Measurements, usable: np.ndarray, band: str | None) -> str:
    """The band used: `band` when given (it must be in the file), else V,
    else g (each when it has enough usable points), else the band with the
    most usable points."""
    if m.band is None:
        return band or ""
    counts = dict.fromkeys(m.band[m.band != ""].tolist(), 0)  # in file order
    for b in counts:
        counts[b] = int(_first_times(m.time, usable & (m.band == b)).sum())
    if band:
        found = _match(band, list(counts))
        if found is None:
            have = ", ".join(f"{b} ({int((m.band == b).sum())} rows)" for b in counts)
            raise CleaningError(
                f"band {band!r} is not in the file, which has {have or 'no band'}; "
                "give one of these as the catalogue's band cell (or band=)"
            )
        return found
    for b in PREFERRED_BANDS:
        if counts.get(b, 0) >= MIN_LIGHT_CURVE_POINTS:
            return b
    if not counts:
        return ""
    return min(counts, key=lambda b: (-counts[b], b not in PREFERRED_BANDS, b))


def clean(
    m: Measurements, *, band: str | None = None, mag_zero_point: float
) -> tuple[np.ndarray, LightCurveRecord]:
    """(N, 3) time, flux, flux error of one band, in file order, and its record.

    Magnitudes m with error e become flux 10**(-0.4 (m - mag_zero_point)),
    error flux * e * ln(10) / 2.5. Raises CleaningError when the band is not
    in the file or fewer than MIN_LIGHT_CURVE_POINTS rows are left.
    """
    code = _reasons(m)
    chosen = choose_band(m, code == 0, band)
    if m.band is not None:
        code[(m.band != chosen) & (m.band != "")] = _CODE["other_band"]
    usable = code == 0
    duplicate = usable & ~_first_times(m.time, usable)
    code[duplicate] = _CODE["duplicate"]
    keep = code == 0
    dropped = {f"dropped_{r}": int((code == _CODE[r]).sum()) for r in DROP_REASONS}
    record = LightCurveRecord(
        band=chosen, n_points=int(keep.sum()), layout=m.layout, **dropped
    )
    if record.n_points < MIN_LIGHT_CURVE_POINTS:
        why = ", ".join(
            f"{n} {k[len('dropped_'):].replace('_', ' ')}"
            for k, n in dropped.items() if n
        )  # fmt: skip
        raise CleaningError(
            f"light curve has {record.n_points} usable point(s)"
            f"{f' in band {chosen}' if chosen else ''} after cleaning, need at "
            f"least {MIN_LIGHT_CURVE_POINTS} (of {len(code)} rows, dropped: "
            f"{why or 'none'}); choose another band with the catalogue's band "
            "cell, or leave the light curve out"
        )
    t, value, error = m.time[keep], m.value[keep], m.error[keep]
    if m.kind == "mag":
        flux = np.power(10.0, -0.4 * (value - mag_zero_point))
        value, error = flux, flux * error * np.log(10.0) / 2.5
    return np.stack([t, value, error], axis=1), record
