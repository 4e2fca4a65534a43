"""A catalogue's stars as the arrays `model.embed` takes, from Python.

`predict` runs whole catalogues; this is the same preprocessing and the
same centre crop (pipeline.make_eval_batches) for people who want the
arrays themselves, e.g. to embed a few stars in a notebook.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from astrom3_jax import api
from astrom3_jax.data import catalog as catalog_lib
from astrom3_jax.data import names as dataset_names
from astrom3_jax.data import normalisation, pipeline
from astrom3_jax.prediction.reading import stored_examples
from astrom3_jax.training import tasks
from astrom3_jax.training import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class CatalogInputs:
    """The model's input arrays for the good rows, in row order, and what
    went into them (each CatalogExample: band, light-curve numbers and their
    sources) and what was left out."""

    inputs: dict[str, np.ndarray]
    ids: tuple[str, ...]
    examples: tuple[catalog_lib.CatalogExample, ...]
    bad_rows: tuple[catalog_lib.BadRow, ...]


def catalog_inputs(
    catalog: str | os.PathLike,
    model_dir: str | os.PathLike,
    *,
    band: str | None = None,
    derive_photometry: bool | None = None,
    skip_bad: bool = False,
    max_bad_fraction: float = catalog_lib.DEFAULT_MAX_BAD_FRACTION,
) -> CatalogInputs:
    """Every row of `catalog` preprocessed with the statistics recorded in
    the workdir `model_dir`, centre-cropped to its sequence length, as
    `model.embed(**result.inputs)` (or a classifier's call) takes them.

    band, derive_photometry, skip_bad and max_bad_fraction mean what they
    mean for `predict`.
    """
    stats = normalisation.read_stats(model_dir)
    config = api.with_defaults(workdir_lib.load_any_config(model_dir))
    names = tuple(config.model.modalities)
    derive = dataset_names.derives_photometry(
        config.get("dataset", ""), derive_photometry
    )
    done = catalog_lib.preprocess(
        catalog, stats, skip_bad=skip_bad, max_bad_fraction=max_bad_fraction,
        band=band, derive_photometry=derive, num_workers=0, progress=False,
    )  # fmt: skip
    examples, bad = [], list(done.bad_rows)
    for ex in done.examples:
        if any(ex.present[m] for m in names):
            examples.append(ex)
            continue
        problem = f"none of this model's modalities {list(names)}"
        if not skip_bad:
            raise catalog_lib.RowError(
                problem, catalog=os.fspath(catalog), row=ex.row, id=ex.id
            )
        bad.append(catalog_lib.BadRow(ex.row, ex.id, os.fspath(catalog), problem))
    source = stored_examples(examples, names)
    batches = pipeline.make_eval_batches(
        source, batch_size=max(len(examples), 1), modalities=names,
        seq_len=config.seq_len,
    )  # fmt: skip
    batch = next(iter(batches))
    return CatalogInputs(
        inputs={k: np.asarray(v) for k, v in tasks.model_inputs(batch).items()},
        ids=tuple(ex.id for ex in examples),
        examples=tuple(examples),
        bad_rows=tuple(sorted(bad, key=lambda b: b.row)),
    )
