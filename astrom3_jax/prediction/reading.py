"""What predict reads, checked before the model is touched: its arguments,
the reference export, and the catalogue's rows, preprocessed in a background
thread (`Feed`) into the stored form the input pipeline takes."""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
from collections.abc import Sequence

from tqdm import tqdm

from astrom3_jax import errors
from astrom3_jax.analysis import store
from astrom3_jax.data import catalog as catalog_lib
from astrom3_jax.data import lightcurve_modes
from astrom3_jax.data import workers as workers_lib
from astrom3_jax.data.astrom3_tfds import objects


class PredictError(errors.UserError, ValueError):
    """A predict call that cannot run as asked (names what to change)."""


def check_arguments(out: str, k: int, max_bad_fraction: float, *, overwrite: bool):
    """Refuses a non-empty `out` (without overwrite), k < 1 and a fraction
    outside [0, 1]."""
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise PredictError(
            f"{out} exists and is not empty; choose another --out or pass --overwrite"
        )
    if k < 1:
        raise PredictError(f"k must be at least 1, got {k}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise PredictError(
            f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}"
        )


def reference_split(reference: str, names: Sequence[str]) -> store.Split:
    """The reference export's train split (else its first), which must hold
    an embedding of every modality in `names`."""
    splits = store.list_splits(reference) if os.path.isdir(reference) else []
    if not splits:
        raise PredictError(
            f"--reference {reference}: not an export (python -m "
            "astrom3_jax.export_embeddings ... --out DIR, then pass DIR or "
            "DIR/<split>)"
        )
    split = "train" if "train" in splits else splits[0]
    ref = store.load_split(reference, split)
    missing = [m for m in names if m not in ref.embeddings]
    if missing:
        raise PredictError(
            f"--reference {reference}: its export has no {missing} embeddings; "
            "export the reference with the same model"
        )
    return ref


def default_workers(n_rows: int) -> int:
    """Preprocessing worker processes for predict: workers.default_workers
    (none on 2 CPUs or fewer, where the model keeps every core busy)."""
    return workers_lib.default_workers(n_rows)


class CatalogSource(list):
    """Catalogue examples in the stored form the input pipeline reads, with
    the fields an object may lack declared (`optional_fields`)."""

    optional_fields: frozenset = frozenset()


def stored_examples(examples, model_modalities) -> CatalogSource:
    """Catalogue examples as the pipeline's stored examples (absent
    modalities stored as optional fields; no label stored as class 0)."""
    out = CatalogSource()
    for ex in examples:
        stored = objects.store_optional(dict(ex.features), optional=model_modalities)
        stored["label"] = max(int(ex.label), 0)  # the pipeline wants a class id
        out.append(stored)
    out.optional_fields = frozenset(
        f for m in model_modalities for f in objects.optional_fields(m)
    )
    return out


def strict_error(error: catalog_lib.RowError) -> catalog_lib.RowError:
    """The error of a bad row in a strict run (saying how to skip such rows)."""
    return catalog_lib.RowError(
        f"{error.problem} (pass skip_bad=True / --skip_bad to leave such rows "
        f"out and list them in {catalog_lib.BAD_ROWS_FILE})",
        catalog=error.catalog, row=error.row, id=error.id, file=error.file,
    )  # fmt: skip


_DONE = object()


class Feed(threading.Thread):
    """Preprocesses a catalogue's rows in the background, in row order, into
    a bounded queue of (row, example | None, RowError | None, second period);
    an exception of the preprocessing itself is queued too and raised by
    `items`. The last is lightcurve_modes.second_period_logit of a good
    row's light curve when `second_period` is asked for (the calibration's
    density reads it), else NaN; it is measured where the row is parsed, so
    parsing workers share it (a few ms a star, 25 for delta Scuti stars).
    `first_error` is the first bad row seen so far (the consumer may stop
    early on it), `bad` how many there were."""

    def __init__(
        self, cat, stats, *, require, num_workers, progress, maxsize, band=None,
        derive_photometry=False, second_period=False,
    ):  # fmt: skip
        super().__init__(name="predict-preprocessing", daemon=True)
        self.cat, self.stats, self.require = cat, stats, tuple(require)
        self.num_workers, self.progress, self.band = num_workers, progress, band
        self.derive_photometry, self.second_period = derive_photometry, second_period
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.stopping = threading.Event()
        self.first_error = None
        self.bad = 0

    def run(self):
        measure = None
        if self.second_period:  # measured where the row is parsed (workers)
            measure = functools.partial(
                lightcurve_modes.example_second_period_logit, stats=self.stats
            )
        rows = catalog_lib.iter_processed(
            self.cat.rows, self.stats, catalog=self.cat.path, require=self.require,
            num_workers=self.num_workers, band=self.band,
            derive_photometry=self.derive_photometry, measure=measure,
        )  # fmt: skip
        bar = tqdm(
            total=len(self.cat), desc=f"read {os.path.basename(self.cat.path)}",
            unit="obj", disable=not self.progress, position=0,
        )  # fmt: skip
        try:
            with bar, contextlib.closing(rows):
                for item in rows:
                    if self.stopping.is_set():
                        return
                    bar.update()
                    row, example, error, second = item
                    if error is not None:
                        self.bad += 1
                        self.first_error = self.first_error or error
                    if second is None:
                        second = float("nan")
                    self._put((row, example, error, second))
        except BaseException as e:  # noqa: BLE001 (raised again by items())
            self._put(e)
        self._put(_DONE)

    def _put(self, item):
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def items(self):
        """The queued rows in order until the last; raises a queued error."""
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        """Stops the preprocessing (if still running) and waits for it."""
        self.stopping.set()
        self.join()
