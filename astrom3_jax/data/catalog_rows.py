"""One catalogue row through the builder's own preprocessing, or a RowError.

A row gives exactly the features the builder writes for the same raw files;
the catalogue columns and the 4 light-curve channels are z-scored with a
model's training statistics (normalisation.NormalisationStats).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

from astrom3_jax import errors
from astrom3_jax.data import (
    modalities,
    photometry_values,
    preprocessing,
    release_io,
    schema,
)
from astrom3_jax.data.catalog_tables import CatalogRow
from astrom3_jax.data.lightcurve_cleaning import LightCurveRecord
from astrom3_jax.data.lightcurve_files import (
    DEFAULT_MAG_ZERO_POINT,
    read_light_curve,
)
from astrom3_jax.data.normalisation import NormalisationStats


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
class CatalogExample:
    """The builder's features of one row, plus which modalities it has.

    `features` holds what the builder writes for an object (id, name,
    spec_filename, label, raw_catalogue, and the features of each PRESENT
    modality: photometry, photometry_aux, raw_flux_mean, raw_flux_mad,
    raw_time_min, raw_time_max / spectra, raw_spectrum_mean,
    raw_spectrum_mad / metadata). An absent modality's features are left
    out (`objects.store_optional` gives the stored form of a config with
    optional modalities). `label` is the class index, -1 when the row has
    none. `light_curve` says what was used of the light-curve file (band,
    points kept, rows dropped by reason) and `photometry_values` the 4
    light-curve catalogue numbers used, each with its source; both None
    without a light curve.
    """

    row: int
    id: str
    label: int
    present: Mapping[str, bool]
    features: Mapping[str, object]
    split: str | None = None
    light_curve: LightCurveRecord | None = None
    photometry_values: photometry_values.PhotometryValues | None = None


def process_row(
    row: CatalogRow,
    stats: NormalisationStats,
    *,
    catalog: str = "",
    require: Sequence[str] = (),
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    band: str | None = None,
    derive_photometry: bool = False,
) -> CatalogExample:
    """The builder's features of one row; raises RowError for a bad row.

    require: modalities the row must have (a row without one is bad).
    band: the light curves' band where a row's `band` cell is blank (None:
    V, else g, else the band with the most points).
    Blank amplitude, period or lksl_statistic cells of a row with a light
    curve are measured from it, a blank rfr_score takes the training mean
    (photometry_values.fill); derive_photometry measures all three for every
    row, catalogue values or not.
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
    present = {
        "photometry": has_lc,
        "spectra": row.spectrum is not None,
        "metadata": has_meta,
    }
    own = _read_own(row, present, bad)
    if not any(present.values()):
        nor = "".join(f", no {m}" for m in own)
        raise bad(
            f"no modality: no lightcurve, no spectrum{nor} and no metadata columns"
        )
    lacking = [m for m in require if not present[m]]
    if lacking:
        raise bad(
            f"lacks {' and '.join(lacking)} (here every row needs {', '.join(require)})"
        )

    info = stats.as_info()
    lc = record = filled = None
    try:
        if has_lc:
            lc, record = read_light_curve(
                row.lightcurve, band=row.band or band, columns=row.lc_columns,
                mag_zero_point=mag_zero_point, obj=row.id,
            )  # fmt: skip
            filled = _fill_photometry(value, lc, info, derive_photometry, row, bad)
            value.update(filled.values)
        spec = None
        if row.spectrum is not None:
            spec = release_io.read_spectrum(row.spectrum, obj=row.id)
    except release_io.ReleaseError as e:
        raise bad(e.problem, e.file) from None
    raw = np.array([value[c] for c in schema.ALL_COLS], dtype=np.float64)
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
    if lc is not None:
        try:
            features.update(preprocessing.preprocess_light_curve(lc, norm[photo_idx]))
        except preprocessing.PreprocessingError as e:
            raise bad(str(e), row.lightcurve) from None
    if spec is not None:
        try:
            features.update(preprocessing.preprocess_spectrum(spec))
        except preprocessing.PreprocessingError as e:
            raise bad(str(e), row.spectrum) from None
    for got in own.values():
        features.update(got or {})
    return CatalogExample(
        row=row.index,
        id=row.id,
        label=label,
        present=present,
        features=features,
        split=row.split,
        light_curve=record,
        photometry_values=filled,
    )


def _read_own(row: CatalogRow, present: dict, bad) -> dict[str, dict | None]:
    """The stored features of the registered modalities with their own
    catalogue reader (None: the row lacks it), their presence set in `present`."""
    out = {}
    for m in modalities.catalog_readers():
        given = row.columns or {}
        values = {c: given.get(c, np.nan) for c in m.catalog_columns}
        try:
            out[m.name] = m.from_catalog(values)
        except ValueError as e:
            raise bad(f"{m.name}: {e}") from None
        present[m.name] = out[m.name] is not None
    return out


def needs_measuring(row: CatalogRow, derive_photometry: bool = False) -> bool:
    """Whether the row's light curve must be read for its catalogue values."""
    if row.problem or row.lightcurve is None:
        return False
    cols = [schema.ALL_COLS.index(c) for c in photometry_values.DERIVABLE]
    return derive_photometry or not np.isfinite(np.asarray(row.values)[cols]).all()


def measure(
    row: CatalogRow,
    *,
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    band: str | None = None,
) -> tuple[float, ...] | None:
    """photometry_values.DERIVABLE measured from the row's cleaned light
    curve, exactly as process_row measures them; None when the light curve
    cannot give them (the row itself is reported when it is processed)."""
    try:
        lc, _ = read_light_curve(
            row.lightcurve, band=row.band or band, columns=row.lc_columns,
            mag_zero_point=mag_zero_point, obj=row.id,
        )  # fmt: skip
        got = photometry_values.derive(*photometry_values.magnitudes(lc))
    except (release_io.ReleaseError, photometry_values.FeatureError):
        return None
    return tuple(float(got[c]) for c in photometry_values.DERIVABLE)


def values_for_stats(
    row: CatalogRow,
    *,
    mag_zero_point: float = DEFAULT_MAG_ZERO_POINT,
    band: str | None = None,
    derive_photometry: bool = False,
    measure_missing: bool = True,
) -> np.ndarray:
    """The row's raw catalogue values (schema.ALL_COLS) as process_row will
    use them, for the train split's statistics.

    amplitude, period and lksl_statistic are measured from the light curve
    where blank (every row's, with derive_photometry), or taken from
    `row.measured` when a first pass measured them, so the statistics
    describe what the model is given. A value that stays blank (no light
    curve, an unreadable one, a blank rfr_score) is NaN and left out of its
    column's statistics; the row itself is reported when it is processed.
    rfr_score is kept as given (it cannot be measured; where it is blank the
    row gets the mean). measure_missing=False: a row without `measured`
    is one whose light curve could not give them (NaN).
    """
    raw = np.array(row.values, dtype=np.float64)
    if not needs_measuring(row, derive_photometry):
        return raw
    measured = row.measured
    if measured is None and measure_missing:
        measured = measure(row, mag_zero_point=mag_zero_point, band=band)
    for j, c in enumerate(photometry_values.DERIVABLE):  # rfr_score: as given
        col = schema.ALL_COLS.index(c)
        if derive_photometry or not np.isfinite(raw[col]):
            raw[col] = np.nan if measured is None else measured[j]
    return raw


def _fill_photometry(value, lc, info, derive_photometry, row, bad):
    """The row's 4 light-curve catalogue numbers, filled in from `lc` where
    blank (photometry_values.fill); a light curve that cannot give them is
    a bad row saying which numbers to supply instead."""
    given = {c: value[c] for c in schema.PHOTO_COLS}
    try:
        return photometry_values.fill(
            given, lc, photometry_values.raw_means(info), derive_all=derive_photometry,
            measured=None if row.measured is None else dict(
                zip(photometry_values.DERIVABLE, row.measured, strict=True)
            ),
        )  # fmt: skip
    except photometry_values.FeatureError as e:
        blank = [c for c in photometry_values.DERIVABLE if not np.isfinite(given[c])]
        raise bad(
            f"cannot derive {', '.join(blank) or 'the light-curve values'} from "
            f"the light curve ({e}); give them as catalogue columns",
            row.lightcurve,
        ) from None
