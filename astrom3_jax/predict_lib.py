"""Your own stars through a model: `predict(workdir, catalog, out)`.

Written to `out`:

  predictions.csv   one row per star: id, name, label (if the catalogue
                    has one), the modalities used; the light curve's
                    band, its layout, points kept and rows dropped by
                    reason (dropped_other_band, _quality, _nondetection,
                    _sentinel, _missing, _bad_error, _duplicate); for a
                    classifier the
                    predicted class and every class's probability, and for
                    a fused classifier each modality's own vote; with a
                    reference, the k-NN class vote, its agreement, the
                    outlier score and its percentile, and where a label is
                    given a mislabel score
  neighbours.csv    with a reference: each star's k nearest reference
                    objects (rank, id, label, cosine similarity)
  catalog/          the embeddings in the export layout (analysis/store.py;
                    absent modalities are NaN rows with presence flags)
  bad_rows.csv      with skip_bad: the rows left out and why
  manifest.json     what was run

They are written chunk by chunk as the model runs (prediction/writing.py),
so that memory holds a chunk of stars, not the catalogue.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

import jax
import numpy as np

from astrom3_jax import api, errors
from astrom3_jax.data import catalog as catalog_lib
from astrom3_jax.data import names as dataset_names
from astrom3_jax.data import normalisation, schema
from astrom3_jax.prediction import reading, running, scoring, shards, writing
from astrom3_jax.prediction.reading import PredictError, default_workers
from astrom3_jax.prediction.writing import NEIGHBOURS_FILE, PREDICTIONS_FILE, SPLIT
from astrom3_jax.training import calibration, calibration_files
from astrom3_jax.training import workdir as workdir_lib

__all__ = [
    "DEFAULT_K",
    "NEIGHBOURS_FILE",
    "PREDICTIONS_FILE",
    "SPLIT",
    "PredictError",
    "Result",
    "default_workers",
    "predict",
]

DEFAULT_K = 10


@dataclasses.dataclass
class Result:
    """What `predict` computed, read back from what it wrote to `out`: the
    ids and presence flags in memory, the arrays memory-mapped (read-only;
    the stored float32 unit rows), the rows read from predictions.csv when
    asked for. (The processes other than the first, which write nothing,
    keep theirs in memory.)"""

    ids: np.ndarray
    present: dict[str, np.ndarray]  # modality -> (N,) bool
    embeddings: dict[str, np.ndarray]  # modality -> (N, D), NaN where absent
    logits: np.ndarray | None
    class_names: list[str]
    rows: Sequence[dict]  # the lines of predictions.csv (text: writing.CsvRows)
    bad_rows: tuple
    # wall seconds: 'load' (model loaded and ready), 'model' (running it,
    # compilation included), 'waiting' (for preprocessed rows), 'scoring'
    # (scores and files of each chunk), 'total'
    timings: dict = dataclasses.field(default_factory=dict)


def predict(
    workdir: str,
    catalog: str,
    out: str,
    *,
    reference: str | None = None,
    k: int = DEFAULT_K,
    step=None,
    skip_bad: bool = False,
    max_bad_fraction: float = 0.05,
    batch_size: int = 256,
    num_workers: int | None = None,
    band: str | None = None,
    derive_photometry: bool | None = None,
    overwrite: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    chunk_batches: int = running.CHUNK_BATCHES,
) -> Result:
    """Predict every star of `catalog` with the model of `workdir`; see the
    module docstring for what is written to `out`. shard=(i, n): only the
    i-th of n blocks of rows, for prediction/shards.merge to join.
    chunk_batches: batches of stars run, scored and written at a time (the
    memory held; the files do not depend on it).

    The catalogue (astrom3_jax/data/catalog.py: one row per star, pointing
    at its raw light curve, spectrum and catalogue values, any of them
    missing) is preprocessed with the builder's own functions and the
    normalisation statistics recorded with the model (no training data
    needed), then run through the one evaluation path
    (training/evaluation.py). The parts: prediction/reading.py (checks, the
    reference, catalogue rows preprocessed in a background thread),
    prediction/running.py (the model on each chunk of rows as soon as it is
    ready), prediction/scoring.py (the numbers; the outlier and mislabel
    scores are the k-NN ones of analysis/outliers.py and
    analysis/mislabels.py) and prediction/writing.py (the files).
    """
    started = time.perf_counter()
    reading.check_arguments(out, k, max_bad_fraction, overwrite=overwrite)
    # The cheap checks first: a refusal comes before any file is parsed.
    stats = normalisation.read_stats(workdir)
    config = api.with_defaults(workdir_lib.load_any_config(workdir))
    names = list(config.model.modalities)
    ref = reading.reference_split(reference, names) if reference is not None else None
    single = config.model.task == "classification" and len(names) == 1
    cat = catalog_lib.read_catalog(catalog)
    sharding = {}
    if shard is not None:  # rows keep their numbers: messages name the real row
        start, stop = shards.shard_rows(len(cat.rows), *shard)
        if start == stop:
            raise errors.ConfigError(
                f"shard {shard[0]}/{shard[1]} of {catalog} holds no rows "
                f"({len(cat.rows)} rows): use fewer shards"
            )
        sharding = dict(shard=shard[0], num_shards=shard[1], rows=[start, stop],
                        catalog_rows=len(cat.rows))  # fmt: skip
        cat = dataclasses.replace(cat, rows=cat.rows[start:stop])
    os.makedirs(out, exist_ok=True)
    timings = {}
    if jax.process_index() == 0:
        output = writing.Output(out, neighbours=ref is not None)
    else:
        output = writing.Kept()
    cal = (
        calibration_files.load(workdir)
        if config.model.task == "classification"
        else None
    )
    score = _Scores(cal, ref, names, k)
    try:
        done = running.run(
            workdir, cat, stats, names, step=step, require=names if single else (),
            skip_bad=skip_bad, max_bad_fraction=max_bad_fraction,
            bad_rows_path=os.path.join(out, catalog_lib.BAD_ROWS_FILE),
            batch_size=batch_size, progress=progress, timings=timings,
            started=started,
            num_workers=default_workers(len(cat)) if num_workers is None
            else num_workers,
            band=band, derive_photometry=dataset_names.derives_photometry(
                config.get("dataset", ""), derive_photometry
            ),
            second_period=_reads_second_period(cal),
            on_chunk=lambda ran: output.add(ran, *score(ran)),
            chunk_batches=chunk_batches,
        )  # fmt: skip
        class_names = _class_names(done.config)
        output.close(
            names=names, class_names=class_names, source=workdir, catalog=catalog,
            k=k, model_task=done.config.model.task, reference=reference,
            bad_rows=len(done.bad), **sharding,
        )  # fmt: skip
    except BaseException:
        output.abort()
        raise
    timings["total"] = time.perf_counter() - started
    return Result(
        **output.result(names), class_names=class_names, bad_rows=tuple(done.bad),
        timings=timings,
    )  # fmt: skip


def _reads_second_period(cal) -> bool:
    """Whether the calibration's density reads each light curve's second
    period (data/lightcurve_modes.py; calibrations before it did not)."""
    inputs = None if cal is None else cal.inputs
    return inputs is not None and (calibration.SECOND_PERIOD_CHANNEL in inputs.channels)


def _class_names(config) -> list[str]:
    return list(schema.CLASSES)[: config.model.num_classes]


class _Scores:
    """The lines of predictions.csv and neighbours.csv of each chunk of
    stars. Every score is a star's own given the model, its calibration
    (percentiles among the validation objects) and the reference
    (percentiles among its objects), never the other stars: chunks are
    scored as they come, with what they share loaded once."""

    def __init__(self, cal, ref, names, k: int):
        self.cal, self.ref, self.names, self.k = cal, ref, names, k
        self.nearest = None

    def __call__(self, ran) -> tuple[list[dict], list[dict] | None]:
        names, ref = self.names, self.ref
        class_names = _class_names(ran.config)
        probs = votes = near = ref_names = nb = unfamiliar = None
        if ran.logits is not None:
            cal = self.cal
            probs = scoring.probabilities(ran.logits, cal.temperature if cal else 1.0)
            unfamiliar = scoring.out_of_distribution(
                cal, ran.embeddings, names, probs, ran.light_curve_numbers
            )
            if len(names) > 1:
                votes = scoring.modality_votes(
                    ran.model, ran.embeddings, ran.present, names
                )
        if ref is not None:
            if self.nearest is None:
                self.nearest = scoring.Nearest(ref, self.k, len(class_names))
            near = self.nearest(ran.embeddings, ran.present, ran.labels)
            ref_names = ref.class_names or class_names
            nb = writing.neighbour_rows(ran.ids, near, ref, ref_names)
        rows = writing.prediction_rows(
            ran, class_names, probs=probs, votes=votes, near=near,
            ref_names=ref_names, unfamiliar=unfamiliar,
        )  # fmt: skip
        return rows, nb
