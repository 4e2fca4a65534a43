"""The model over a catalogue as its rows arrive: the background `Feed`
parses while this thread loads and compiles the model and runs it on each
chunk of ready rows, so parsing overlaps the model instead of preceding it;
each chunk's outputs go straight to the caller (`on_chunk`), which scores
and writes them, so nothing here grows with the catalogue but the list of
bad rows; the bad-row policy (strict, or skip_bad up to max_bad_fraction)
lives here."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from tqdm import tqdm

from astrom3_jax import api
from astrom3_jax.analysis import store
from astrom3_jax.data import catalog as catalog_lib
from astrom3_jax.prediction import reading
from astrom3_jax.training import calibration, calibration_files, evaluation

CHUNK_BATCHES = 4  # batches of preprocessed rows per model run (the first: 1)


@dataclasses.dataclass
class Ran:
    """One chunk of good rows: their stars and model outputs, in row order."""

    ids: np.ndarray
    star_names: list  # each star's name (bytes decoded)
    labels: np.ndarray  # class id, -1 where the catalogue gives none
    light_curves: list  # what was used of each light-curve file (or None)
    photometry_values: list  # the 4 light-curve numbers and sources (or None)
    has: list  # the modalities each star has, model's or not (tuple of names)
    # (N, 7) calibration.LIGHT_CURVE_NUMBERS (NaN rows: no light curve; the
    # second period NaN unless the calibration reads it)
    light_curve_numbers: np.ndarray
    present: dict[str, np.ndarray]  # modality -> (N,) bool
    embeddings: dict[str, np.ndarray]  # modality -> (N, D), NaN where absent
    logits: np.ndarray | None
    model: object
    config: object


@dataclasses.dataclass
class Done:
    """What is left of a run once every chunk went to `on_chunk`."""

    rows: int  # good rows, all handed over
    bad: list  # catalog.BadRow of every row left out
    config: object


def run(
    workdir: str,
    cat,
    stats,
    names: Sequence[str],
    *,
    step,
    require: Sequence[str],
    skip_bad: bool,
    max_bad_fraction: float,
    bad_rows_path: str,
    batch_size: int,
    num_workers: int,
    band: str | None = None,
    derive_photometry: bool = False,
    second_period: bool = False,
    progress: bool,
    timings: dict,
    started: float,
    on_chunk: Callable[[Ran], None],
    chunk_batches: int = CHUNK_BATCHES,
) -> Done:
    """Runs the model of `workdir` over every good row of `cat`, handing
    each chunk of `chunk_batches` batches (the first: one) to `on_chunk` as
    soon as it is run; with skip_bad writes bad_rows.csv; raises on a bad
    row (strict) or on too many of them. The batches are the same whatever
    `chunk_batches` is (every chunk is whole batches), so are the outputs.
    Fills `timings` ('load' counted from `started`, 'model', 'waiting',
    'scoring': in `on_chunk`). second_period: measure each light curve's
    second period (reading.Feed) for the calibration's density."""
    if chunk_batches < 1:
        raise ValueError(f"chunk_batches must be at least 1, got {chunk_batches}")
    batch = max(jax.device_count(), batch_size - batch_size % jax.device_count())
    chunk = batch * chunk_batches
    feed = reading.Feed(
        cat, stats, require=require, num_workers=num_workers, maxsize=2 * chunk,
        band=band, derive_photometry=derive_photometry, second_period=second_period,
        progress=progress and jax.process_index() == 0,
    )  # fmt: skip
    limit = catalog_lib.allowed_bad(len(cat), max_bad_fraction)
    stars, pending, bad = [], [], []
    done = 0  # good rows handed to on_chunk
    timings.update(model=0.0, waiting=0.0, scoring=0.0)
    feed.start()
    try:
        model, config = api.load_model(workdir, step=step)
        predictor = evaluation.Predictor(model, seed=config.seed)
        timings["load"] = time.perf_counter() - started
        bar = tqdm(
            total=len(cat), desc="predict", unit="obj", position=1,
            disable=not progress or jax.process_index() != 0,
        )  # fmt: skip

        def run_model():
            nonlocal done
            # feed.bad: the bad rows read so far, some maybe not yet seen here
            if not pending or max(len(bad), feed.bad) > limit:
                pending.clear()
                stars.clear()
                return
            t = time.perf_counter()
            got = predictor.run(
                reading.stored_examples(pending, names),
                batch_size=batch,
                modalities=names,
                seq_len=config.seq_len,
            )
            t2 = time.perf_counter()
            timings["model"] += t2 - t
            on_chunk(_assemble(stars, got.outputs, names, model, config))
            timings["scoring"] += time.perf_counter() - t2
            done += len(pending)
            bar.update(len(pending))
            pending.clear()
            stars.clear()

        with bar:
            items = feed.items()
            while True:
                t = time.perf_counter()
                item = next(items, None)
                timings["waiting"] += time.perf_counter() - t
                if item is None:
                    break
                row, example, error, second = item
                if error is None and not any(example.present.get(m) for m in names):
                    error = catalog_lib.RowError(
                        f"none of this model's modalities {names}",
                        catalog=cat.path, row=row.index, id=row.id, file=cat.path,
                    )  # fmt: skip
                if error is not None and not skip_bad:
                    raise reading.strict_error(error)
                if error is not None:
                    bad.append(
                        catalog_lib.BadRow(
                            error.row, error.id, error.file, error.problem
                        )
                    )
                    continue
                name = example.features.get("name", example.id)
                has = tuple(m for m, p in example.present.items() if p)
                stars.append(
                    (example.id, name, example.label, example.light_curve,
                     example.photometry_values, has,
                     _numbers(example.features.get(calibration_files.AUX_FIELD),
                              second))
                )  # fmt: skip
                pending.append(example)
                # The first run starts at one batch: it compiles the model's
                # step while the next rows are read.
                if len(pending) >= (chunk if done else batch):
                    if feed.first_error is not None and not skip_bad:
                        # before more model time
                        raise reading.strict_error(feed.first_error)
                    run_model()
            run_model()
    finally:
        feed.close()
    if skip_bad:
        catalog_lib.write_bad_rows(bad_rows_path, bad)
    _refuse_too_many_bad(cat, bad, limit, max_bad_fraction, bad_rows_path, skip_bad)
    return Done(done, bad, config)


def _refuse_too_many_bad(cat, bad, limit, max_bad_fraction, path, skip_bad):
    """CatalogError when every row, or more than `limit` rows, are bad."""
    n_rows = len(cat)
    listed = f" They are listed in {path}." if skip_bad else ""
    if len(bad) == n_rows:
        raise catalog_lib.CatalogError(
            f"catalog {cat.path}: all {n_rows} rows are bad, nothing to use.{listed} "
            f"First: row {bad[0].row} (id {bad[0].id!r}): {bad[0].reason}"
        )
    if len(bad) > limit:
        raise catalog_lib.CatalogError(
            f"catalog {cat.path}: {len(bad)} of {n_rows} rows are bad "
            f"({100 * len(bad) / n_rows:.1f}%), more than max_bad_fraction="
            f"{max_bad_fraction:g} allows ({limit}).{listed} Fix them, or allow "
            "more with max_bad_fraction= / --max_bad_fraction."
        )


N_NUMBERS = len(calibration.LIGHT_CURVE_NUMBERS)


def _numbers(aux, second: float) -> np.ndarray | None:
    """A star's LIGHT_CURVE_NUMBERS row, None without a light curve."""
    if aux is None:
        return None
    return np.append(np.asarray(aux, np.float64), second)


def _assemble(stars, outputs, names, model, config) -> Ran:
    """A chunk's stars and model outputs, split into presence flags,
    embeddings (NaN where absent) and logits."""
    outputs = dict(outputs)
    n = len(stars)
    present = {
        m: np.asarray(outputs.pop(store.presence_column(m), np.ones(n)), bool)
        for m in names
    }
    logits = outputs.pop("logits", None)
    embeddings = {m: np.where(present[m][:, None], outputs[m], np.nan) for m in names}
    star_names = [s[1].decode() if isinstance(s[1], bytes) else s[1] for s in stars]
    return Ran(
        ids=np.asarray([s[0] for s in stars]),
        star_names=star_names,
        labels=np.asarray([s[2] for s in stars], np.int64),  # -1: none
        light_curves=[s[3] for s in stars],
        photometry_values=[s[4] for s in stars],
        has=[s[5] for s in stars],
        light_curve_numbers=np.asarray(
            [np.full(N_NUMBERS, np.nan) if s[6] is None else s[6] for s in stars],
            np.float64,
        ).reshape(n, N_NUMBERS),
        present=present,
        embeddings=embeddings,
        logits=logits,
        model=model,
        config=config,
    )
