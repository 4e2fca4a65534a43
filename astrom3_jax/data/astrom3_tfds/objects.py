"""Turns one catalogue row plus its raw files into one stored example.

Kept apart from the builder so worker processes import only numpy, astropy
and our readers (no TFDS), and so the same code serves every config: the
Hub release, a local copy, and synthetic releases.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from astrom3_jax import errors
from astrom3_jax.data import preprocessing, release_io, schema
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


def process_row(row: Mapping, ctx: Context, archive: zipfile.ZipFile) -> dict:
    """The stored example of one CSV row; raises ReleaseError naming object and file."""
    obj = _describe(row)
    for c in ("name", "spec_filename"):
        if not (row.get(c) or "").strip():
            raise ReleaseError(f"blank {c}", file=ctx.csv_path, obj=obj)
    target = row["target"]
    if target not in schema.CLASSES:
        raise ReleaseError(
            f"unknown class {target!r}; known: {', '.join(schema.CLASSES)}",
            file=ctx.csv_path,
            obj=obj,
        )
    raw = np.array([row[c] for c in schema.ALL_COLS], dtype=np.float64)
    bad = [c for c, v in zip(schema.ALL_COLS, raw, strict=True) if not np.isfinite(v)]
    if bad:
        raise ReleaseError(
            f"blank or non-finite catalogue value(s) in {', '.join(bad)}",
            file=ctx.csv_path,
            obj=obj,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = preprocessing.normalise_catalogue(
            {c: row[c] for c in ctx.info["all_cols"]}, ctx.info
        )
    bad = [
        c for c, v in zip(ctx.info["all_cols"], norm, strict=True) if not np.isfinite(v)
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

    lc = release_io.read_light_curve(archive, row["name"], obj=obj)
    try:
        lc_out = preprocessing.preprocess_light_curve(lc, photo)
    except preprocessing.PreprocessingError as e:
        member = f"{archive.filename}:{release_io.dat_member(row['name'])}"
        raise ReleaseError(str(e), file=member, obj=obj) from None

    spec_path = ctx.files.spectrum(target, row["spec_filename"])
    spec = release_io.read_spectrum(spec_path, obj=obj)
    try:
        spec_out = preprocessing.preprocess_spectrum(spec)
    except preprocessing.PreprocessingError as e:
        raise ReleaseError(str(e), file=spec_path, obj=obj) from None

    example = {
        "id": row["id"],
        "name": row["name"],
        "spec_filename": row["spec_filename"],
        "label": schema.CLASSES.index(target),
        "metadata": meta.astype(np.float32),
        "raw_catalogue": raw,
        **lc_out,
        **spec_out,
    }
    for c in ctx.extra_text:
        example[c] = row.get(c) or ""
    return example


# ------------------------------------------------------------------ parallel map
class WorkerFailure(errors.UserError, RuntimeError):
    """A parsing worker died or failed outside any one object's files."""


_WORKER: dict = {}


def _init_worker(ctx: Context):
    """Opens photometry.zip once per worker; never raises.

    An initializer that raises makes a process pool restart the worker
    forever, so a failure is kept and raised by the worker's first task.
    """
    _WORKER.clear()
    _WORKER["ctx"] = ctx
    try:
        _WORKER["zip"] = release_io.open_photometry(ctx.files.photometry_zip)
    except Exception as e:  # reported by the first task, see above
        _WORKER["init_error"] = e


def _work_one(row):
    """(example, None) on success, (None, error) for a bad object.

    ReleaseError is a bad object (skippable); anything else is a bug or a
    broken environment and stops the build, naming the object.
    """
    ctx = _WORKER["ctx"]
    try:
        return process_row(row, ctx, _WORKER["zip"]), None
    except ReleaseError as e:
        return None, e
    except Exception as e:
        raise WorkerFailure(
            f"object {_describe(row)} (split CSV {ctx.csv_path}): unexpected "
            f"{type(e).__name__}: {e}"
        ) from e


def _work_chunk(rows):
    if "init_error" in _WORKER:
        raise _WORKER["init_error"]
    return [_work_one(row) for row in rows]


def process_rows(
    rows: Sequence[Mapping], ctx: Context, num_workers: int = 0
) -> Iterator:
    """Yields (row, example | None, ReleaseError | None) in row order.

    num_workers <= 1 works in this process; otherwise a spawn-started pool
    (safe when JAX or threads are already running in the parent). Any worker
    failure (photometry.zip unreadable, a crash, a killed process) ends the
    iteration with an exception instead of a hang.
    """
    # Opened here first so an unreadable zip fails before any worker starts.
    archive = release_io.open_photometry(ctx.files.photometry_zip)
    if num_workers > 1:
        archive.close()
        yield from _process_in_pool(rows, ctx, num_workers)
        return
    _init_worker(ctx)
    _WORKER["zip"] = archive
    try:
        for row in rows:
            yield (row, *_work_one(row))
    finally:
        _WORKER.pop("zip").close()
        _WORKER.clear()


def _process_in_pool(rows, ctx, num_workers):
    size = max(1, min(64, len(rows) // (8 * num_workers)))
    chunks = iter([rows[i : i + size] for i in range(0, len(rows), size)])
    pool = cf.ProcessPoolExecutor(
        num_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(ctx,),
    )
    pending = collections.deque()  # bounded: results cannot pile up in memory

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
                    "a parsing worker process died (killed, out of memory or "
                    f"crashed) while reading objects {_describe(chunk[0])} to "
                    f"{_describe(chunk[-1])} of {ctx.csv_path} "
                    f"(photometry {ctx.files.photometry_zip}): {e}"
                ) from None
            submit()
            for row, (example, error) in zip(chunk, results, strict=True):
                yield row, example, error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
