"""Turns one catalogue row plus its raw files into one stored example.

Kept apart from the builder so worker processes import only numpy, astropy
and our readers (no TFDS), and so the same code serves every config: the
Hub release, a local copy, and synthetic releases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from astrom3_jax.data import (
    modalities,
    photometry_values,
    preprocessing,
    release_io,
    schema,
)
from astrom3_jax.data import workers as workers_lib
from astrom3_jax.data.release_io import ReleaseError


@dataclasses.dataclass(frozen=True)
class ReleaseFiles:
    """Where one configuration's raw files are (local paths only)."""

    photometry_zip: str
    info_json: str
    split_csvs: Mapping[str, str]  # TFDS split name -> CSV path
    spectra_root: str | None = None  # <root>/spectra/<CLASS>/<file>
    spectra_paths: Mapping[tuple[str, str], str] | None = None  # downloaded files

    def spectrum(self, target: str, spec_filename: str) -> str:
        if self.spectra_paths is not None:
            key = (target, spec_filename)
            return self.spectra_paths.get(
                key, f"<not downloaded: {target}/{spec_filename}>"
            )
        return os.path.join(self.spectra_root, target, spec_filename)


@dataclasses.dataclass(frozen=True)
class Context:
    files: ReleaseFiles
    info: Mapping
    csv_path: str
    extra_text: Sequence[str] = ()  # e.g. true_target, subtype (synthetic)
    optional: Sequence[str] = ()  # modalities an object may lack (see store_optional)
    # amplitude, period, lksl_statistic measured from the light curve and
    # rfr_score the training mean, in place of the CSV's (photometry_values)
    derive_photometry: bool = False


# ------------------------------------------------------------- absent modalities
# In a config whose objects may lack a modality, the modality's fixed-shape
# stored fields (modalities.Modality.stored) get a leading 0-or-1 axis: one
# row when the object has it, none when it does not. Its variable-length
# fields keep their shape and are stored empty (`photometry`, (0, 3), for an
# object without a light curve). The other stored fields keep their shape:
# `spec_filename` is '' for an object without a spectrum; `raw_catalogue`
# holds nan in the cells of an absent modality (as blank cells of the CSV read).
def optional_fields(modality: str) -> tuple[str, ...]:
    """The fields of `modality` stored with a 0-or-1 axis where it may be
    absent; the first of them says whether an object has it."""
    return tuple(f.name for f in modalities.entry(modality).stored if not f.ragged)


def stored_field(name: str) -> modalities.StoredField:
    """The registered StoredField called `name`."""
    for m in modalities.stored_names():
        for f in modalities.entry(m).stored:
            if f.name == name:
                return f
    raise KeyError(f"no registered modality stores {name!r}")


def check_optional(optional: Sequence[str]) -> None:
    known = modalities.stored_names()
    unknown = [m for m in optional if m not in known]
    if unknown:
        raise ValueError(
            f"modalities {unknown} cannot be optional; known: {sorted(known)}"
        )


def store_optional(
    example: Mapping, optional: Sequence[str], stored: Sequence[str] | None = None
) -> dict:
    """The stored form of `example` in a config where `optional` may be absent.

    `example` holds the features of the modalities the object has and lacks
    those of the others (as `process_row` or a user's catalogue produce it).
    Each optional modality's fixed-shape fields get a leading axis of
    length 1, or are empty arrays of length 0 when absent (its
    variable-length fields too): nothing is stored for an absent modality,
    no fill value that could pass for data. `stored`: the fields a data set
    stores, if not all of the builder's (a toy data set of model inputs only).
    """
    check_optional(optional)
    out = dict(example)
    for m in optional:
        fields = [
            f
            for f in modalities.entry(m).stored
            if not f.ragged and (stored is None or f.name in stored)
        ]
        have = [f.name in example for f in fields]
        if any(have) and not all(have):
            lacking = [f.name for f, h in zip(fields, have, strict=True) if not h]
            raise ValueError(f"{m} is half present: no {', '.join(lacking)}")
        for f in fields:
            dtype = np.dtype(f.dtype)
            if all(have):
                value = np.asarray(example[f.name], dtype)
                if value.shape != f.shape:
                    raise ValueError(f"{f.name} has shape {value.shape}, not {f.shape}")
                out[f.name] = value[None]
            else:
                out[f.name] = np.zeros((0, *f.shape), dtype)
        if not all(have):
            for f in modalities.entry(m).stored:
                if f.ragged and (stored is None or f.name in stored):
                    out[f.name] = np.zeros((0, *f.shape[1:]), np.dtype(f.dtype))
    return out


def _describe(row) -> str:
    name, oid = row.get("name") or "?", row.get("id") or "?"
    return f"{name} ({oid})"


def _column_indices(info, cols, info_path):
    all_cols = list(info["all_cols"])
    missing = [c for c in cols if c not in all_cols]
    if missing:
        raise ReleaseError(
            f"info.json all_cols lacks {', '.join(missing)}", file=info_path
        )
    return [all_cols.index(c) for c in cols]


def _blank(value) -> bool:
    return not (value or "").strip()


def process_row(row: Mapping, ctx: Context, archive: zipfile.ZipFile) -> dict:
    """The stored example of one CSV row; raises ReleaseError naming object and file.

    In a config with optional modalities (ctx.optional), a blank
    `spec_filename` means "no spectrum" and blank cells in all 34 metadata
    columns mean "no catalogue values"; the modality is then absent (see
    `store_optional`), not bad. Elsewhere both are bad objects, as is a
    metadata row with only some cells blank.
    """
    obj = _describe(row)
    has_spec = not _blank(row.get("spec_filename"))
    blank = ["name"] + (
        [] if has_spec or "spectra" in ctx.optional else ["spec_filename"]
    )
    for c in blank:
        if _blank(row.get(c)):
            raise ReleaseError(f"blank {c}", file=ctx.csv_path, obj=obj)
    target = row["target"]
    lc = None
    if ctx.derive_photometry:
        lc = release_io.read_light_curve(archive, row["name"], obj=obj)
        row = _with_derived_photometry(row, lc, ctx, archive, obj)
    if target not in schema.CLASSES:
        raise ReleaseError(
            f"unknown class {target!r}; known: {', '.join(schema.CLASSES)}",
            file=ctx.csv_path,
            obj=obj,
        )
    raw = np.array([row[c] for c in schema.ALL_COLS], dtype=np.float64)
    finite = dict(zip(schema.ALL_COLS, np.isfinite(raw), strict=True))
    has_meta = "metadata" not in ctx.optional or any(
        finite[c] for c in schema.META_COLS
    )
    used = set(schema.PHOTO_COLS) | (set(schema.META_COLS) if has_meta else set())
    bad = [c for c in schema.ALL_COLS if c in used and not finite[c]]
    if bad:
        hint = ""
        if "metadata" in ctx.optional and set(bad) <= set(schema.META_COLS):
            hint = (
                f"; an object without catalogue values leaves all "
                f"{len(schema.META_COLS)} metadata cells blank"
            )
        raise ReleaseError(
            f"blank or non-finite catalogue value(s) in {', '.join(bad)}{hint}",
            file=ctx.csv_path,
            obj=obj,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = preprocessing.normalise_catalogue(
            {c: row[c] for c in ctx.info["all_cols"]}, ctx.info
        )
    bad = [
        c
        for c, v in zip(ctx.info["all_cols"], norm, strict=True)
        if c in used and not np.isfinite(v)
    ]
    if bad:
        raise ReleaseError(
            "catalogue value(s) non-finite after the info.json transforms "
            f"(e.g. log10 of a period <= 0): {', '.join(bad)}",
            file=ctx.csv_path,
            obj=obj,
        )
    photo = norm[_column_indices(ctx.info, schema.PHOTO_COLS, ctx.files.info_json)]
    meta = norm[_column_indices(ctx.info, schema.META_COLS, ctx.files.info_json)]

    if lc is None:
        lc = release_io.read_light_curve(archive, row["name"], obj=obj)
    try:
        lc_out = preprocessing.preprocess_light_curve(lc, photo)
    except preprocessing.PreprocessingError as e:
        member = f"{archive.filename}:{release_io.dat_member(row['name'])}"
        raise ReleaseError(str(e), file=member, obj=obj) from None

    spec_out = {}
    if has_spec:
        spec_path = ctx.files.spectrum(target, row["spec_filename"])
        spec = release_io.read_spectrum(spec_path, obj=obj)
        try:
            spec_out = preprocessing.preprocess_spectrum(spec)
        except preprocessing.PreprocessingError as e:
            raise ReleaseError(str(e), file=spec_path, obj=obj) from None

    example = {
        "id": row["id"],
        "name": row["name"],
        "spec_filename": row["spec_filename"] if has_spec else "",
        "label": schema.CLASSES.index(target),
        "raw_catalogue": raw,
        **lc_out,
        **spec_out,
    }
    if has_meta:
        example["metadata"] = meta.astype(np.float32)
    for c in ctx.extra_text:
        example[c] = row.get(c) or ""
    if ctx.optional:
        return store_optional(example, ctx.optional)
    return example


def _with_derived_photometry(row, lc, ctx: Context, archive, obj: str) -> dict:
    """The row with its 4 light-curve catalogue numbers replaced by those
    measured from `lc` (rfr_score: the training mean)."""
    try:
        filled = photometry_values.fill(
            {}, lc, photometry_values.raw_means(ctx.info), derive_all=True
        )
    except photometry_values.FeatureError as e:
        member = f"{archive.filename}:{release_io.dat_member(row['name'])}"
        raise ReleaseError(
            f"cannot measure the light-curve catalogue numbers ({e})",
            file=member, obj=obj,
        ) from None  # fmt: skip
    return {**row, **filled.values}


# ------------------------------------------------------------------ parallel map
@dataclasses.dataclass
class _WorkerState:
    """What a worker keeps between rows: the context and photometry.zip, open."""

    ctx: Context
    archive: zipfile.ZipFile

    def close(self):
        self.archive.close()


def _open_worker(ctx: Context) -> _WorkerState:
    return _WorkerState(ctx, release_io.open_photometry(ctx.files.photometry_zip))


def _work_one(row, state: _WorkerState):
    """(example, None) on success, (None, error) for a bad object.

    ReleaseError is a bad object (skippable); anything else is a bug or a
    broken environment and stops the build (workers.ordered_map names it).
    """
    try:
        return process_row(row, state.ctx, state.archive), None
    except ReleaseError as e:
        return None, e


def process_rows(
    rows: Sequence[Mapping], ctx: Context, num_workers: int = 0
) -> Iterator:
    """Yields (row, example | None, ReleaseError | None) in row order.

    num_workers <= 1 works in this process; otherwise a spawn-started pool
    (workers.ordered_map). Any worker failure (photometry.zip unreadable, a
    crash, a killed process) ends the iteration with an exception instead
    of a hang.
    """
    if num_workers > 1:  # an unreadable zip fails before any worker starts
        release_io.open_photometry(ctx.files.photometry_zip).close()
    results = workers_lib.ordered_map(
        _work_one, rows, workers=num_workers, setup=_open_worker, setup_args=(ctx,),
        name=lambda row: f"object {_describe(row)}",
        source=f"split CSV {ctx.csv_path} (photometry {ctx.files.photometry_zip})",
        task="parsing", max_chunk=64,
    )  # fmt: skip
    with contextlib.closing(results):
        for row, (example, error) in zip(rows, results, strict=True):
            yield row, example, error
