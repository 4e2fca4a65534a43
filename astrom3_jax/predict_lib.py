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
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from astrom3_jax import api, errors
from astrom3_jax.data import catalog as catalog_lib
from astrom3_jax.data import names as dataset_names
from astrom3_jax.data import normalisation, schema
from astrom3_jax.prediction import reading, running, scoring, shards, writing
from astrom3_jax.prediction.reading import PredictError, default_workers
from astrom3_jax.prediction.writing import NEIGHBOURS_FILE, PREDICTIONS_FILE, SPLIT
from astrom3_jax.training import calibration_files
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
    """What `predict` computed (also written to `out`)."""

    ids: np.ndarray
    present: dict[str, np.ndarray]  # modality -> (N,) bool
    embeddings: dict[str, np.ndarray]  # modality -> (N, D), NaN where absent
    logits: np.ndarray | None
    class_names: list[str]
    rows: list[dict]  # the lines of predictions.csv
    bad_rows: tuple
    # wall seconds: 'load' (model loaded and ready), 'model' (running it,
    # compilation included), 'waiting' (for preprocessed rows), 'total'
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
) -> Result:
    """Predict every star of `catalog` with the model of `workdir`; see the
    module docstring for what is written to `out`. shard=(i, n): only the
    i-th of n blocks of rows, for prediction/shards.merge to join.

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
    ran = running.run(
        workdir, cat, stats, names, step=step, require=names if single else (),
        skip_bad=skip_bad, max_bad_fraction=max_bad_fraction,
        bad_rows_path=os.path.join(out, catalog_lib.BAD_ROWS_FILE),
        batch_size=batch_size, progress=progress, timings=timings, started=started,
        num_workers=default_workers(len(cat)) if num_workers is None else num_workers,
        band=band, derive_photometry=dataset_names.derives_photometry(
            config.get("dataset", ""), derive_photometry
        ),
    )  # fmt: skip
    class_names = list(schema.CLASSES)[: ran.config.model.num_classes]
    probs = votes = near = ref_names = nb = unfamiliar = None
    if ran.logits is not None:
        cal = calibration_files.load(workdir)
        probs = scoring.probabilities(ran.logits, cal.temperature if cal else 1.0)
        unfamiliar = scoring.out_of_distribution(cal, ran.embeddings, names, probs)
        if len(names) > 1:
            votes = scoring.modality_votes(
                ran.model, ran.embeddings, ran.present, names
            )
    if ref is not None:
        near = scoring.neighbours(
            ref, ran.embeddings, ran.present, ran.labels, k, len(class_names)
        )
        ref_names = ref.class_names or class_names
        nb = writing.neighbour_rows(ran.ids, near, ref, ref_names)
    rows = writing.prediction_rows(
        ran, class_names, probs=probs, votes=votes, near=near, ref_names=ref_names,
        unfamiliar=unfamiliar,
    )  # fmt: skip
    if jax.process_index() == 0:
        writing.write_tables(out, rows, nb)
        writing.write_embeddings(
            out, ran, class_names, source=workdir, catalog=catalog, k=k,
            model_task=ran.config.model.task, reference=reference, **sharding,
        )  # fmt: skip
    timings["total"] = time.perf_counter() - started
    return Result(
        ran.ids, ran.present, ran.embeddings, ran.logits, class_names, rows,
        tuple(ran.bad), timings,
    )  # fmt: skip
