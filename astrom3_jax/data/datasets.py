"""Prepared `astrom3/<config>` data sets: build once, then open splits.

The one place the library touches the TFDS builder. Synthetic configs are
generated on first use (no network); a real config that is not prepared
stops with the command that prepares it.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
from absl import logging

from astrom3_jax import errors
from astrom3_jax.data import names, normalisation
from astrom3_jax.data.astrom3_tfds import astrom3_dataset_builder as astrom3


def config_names() -> list[str]:
    """Every astrom3 config: the release's 20 and the synthetic ones."""
    return names.config_names()


def check_config_name(name: str) -> None:
    names.check(name)


def builder(config_name: str, data_dir: str | None = None, **kwargs):
    """The astrom3 builder of `config_name` (not necessarily prepared)."""
    check_config_name(config_name)
    return astrom3.Builder(config=config_name, data_dir=data_dir or None, **kwargs)


def prepare(
    config_name: str = "full_42",
    data_dir: str | None = None,
    manual_dir: str | None = None,
    *,
    skip_bad: bool = False,
    num_workers: int | None = None,
    max_bad_fraction: float = astrom3.DEFAULT_MAX_BAD_FRACTION,
    overwrite: bool = False,
    beam_pipeline_options: str | None = None,
):
    """Builds `astrom3/<config_name>` (once) and returns the ready builder.

    Read it with `builder.as_data_source(split)`; splits are train,
    validation, test (+ unseen for synthetic configs). With skip_bad, bad
    objects are left out and listed, but more than max_bad_fraction of a
    split still fails the build. An existing build is reused unless it left
    out objects these options would not: then this raises, and
    overwrite=True deletes and rebuilds it (downloads are kept).
    beam_pipeline_options: build with Apache Beam (the `beam` extra) instead
    of the process pool, e.g. "runner=DirectRunner,direct_num_workers=2" or
    a Dataflow runner's options, comma-separated as TFDS's CLI takes them.
    """
    import tensorflow_datasets as tfds

    options = dict(
        skip_bad=skip_bad, max_bad_fraction=max_bad_fraction, num_workers=num_workers
    )
    b = builder(config_name, data_dir, **options)
    if overwrite and os.path.isdir(b.data_dir):
        # Removed here rather than by TFDS's overwrite mode, which cannot set
        # the file format of a builder that has read the old data's info.
        logging.info("Deleting %s to rebuild it.", b.data_dir)
        shutil.rmtree(b.data_dir)
        b = builder(config_name, data_dir, **options)
    dl_config = tfds.download.DownloadConfig(
        manual_dir=os.path.abspath(manual_dir) if manual_dir else None,
        beam_options=beam_options(beam_pipeline_options),
    )
    # TFDS's own banner ("Downloading and preparing dataset Unknown size
    # (download: Unknown size, ...)") says nothing true about this builder,
    # whose downloads go through huggingface_hub: one line of ours instead.
    b._log_download_bytes = lambda: None
    if not b.is_prepared():
        logging.info("Building astrom3/%s in %s.", config_name, b.data_dir)
    b.download_and_prepare(file_format="array_record", download_config=dl_config)
    return b


def beam_options(text: str | None):
    """Beam PipelineOptions from "key=value,key=value" (None: no Beam)."""
    if not text:
        return None
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise errors.ConfigError(
            "a Beam build needs Apache Beam: pip install 'astrom3-jax[beam]'"
        ) from None
    return PipelineOptions([f"--{opt.strip()}" for opt in text.split(",") if opt])


def report(prepared) -> dict:
    """The bad-object report written next to the prepared data (bad_objects.json)."""
    with open(os.path.join(prepared.data_dir, astrom3.REPORT_NAME)) as f:
        return json.load(f)


def missing_data_message(config_name: str, data_dir: str | None) -> str:
    where = data_dir or "~/tensorflow_datasets"
    if names.parse(config_name).catalog:
        return (
            f"TFDS data set astrom3/{config_name} is not prepared in {where}. Build "
            "it once from your catalogue table (DIR/catalog.csv, .ecsv, .fits or "
            ".vot; see astrom3_jax.data.catalog):\n"
            f"  python -m tfds_builders.build --config {config_name} "
            f"--manual_dir DIR --data_dir {where}\n"
            "then pass the same data_dir here."
        )
    return (
        f"TFDS data set astrom3/{config_name} is not prepared in {where}. Build it "
        "once: it downloads the Hugging Face Hub release, or reads a local copy "
        "given as --manual_dir:\n"
        f"  python -m tfds_builders.build --config {config_name} "
        f"--data_dir {where} [--manual_dir RELEASE_DIR]\n"
        "then pass the same data_dir here."
    )


def ensure_prepared(config_name: str, data_dir: str | None = None):
    """The prepared builder; synthetic configs are generated if absent.

    On several hosts process 0 generates and the others wait for it.
    """
    b = builder(config_name, data_dir)
    if not b.is_prepared():
        if not names.is_synthetic(config_name):
            raise errors.DataNotPreparedError(
                missing_data_message(config_name, data_dir)
            )
        if jax.process_index() == 0:
            logging.info("Generating astrom3/%s (no network needed).", config_name)
            b = prepare(config_name, data_dir)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("astrom3 data prepared")
            b = builder(config_name, data_dir)
    return b


def open_sources(
    config_name: str, splits, data_dir: str | None = None
) -> dict[str, object]:
    """{split: random-access source} of the prepared (or generated) data set."""
    b = ensure_prepared(config_name, data_dir)
    return {s: b.as_data_source(s) for s in splits}


def normalisation_stats(config_name: str, data_dir: str | None = None):
    """The training split's normalisation statistics the build recorded.

    A `NormalisationStats` (astrom3_jax.data.normalisation); what a training
    run writes into its workdir with `normalisation.write_stats`.
    """
    b = ensure_prepared(config_name, data_dir)
    return normalisation.stats_of_prepared(b.data_dir)


def record_stats(config_name: str, data_dir: str | None, workdir: str) -> bool:
    """Write the data set's training-split statistics into `workdir`, so that
    `predict` can normalise new objects as this run's data was; False (with
    a warning) when the prepared data predates recorded statistics."""
    try:
        stats = normalisation_stats(config_name, data_dir)
    except normalisation.MissingStatsError as e:
        logging.warning("No normalisation statistics recorded in %s: %s", workdir, e)
        return False
    if jax.process_index() == 0:
        normalisation.write_stats(workdir, stats)
    return True


def split_names(config_name: str, data_dir: str | None = None) -> list[str]:
    """The splits a prepared data set holds (train, validation, test, unseen)."""
    return list(ensure_prepared(config_name, data_dir).info.splits)


def with_subset(config_name: str, subset: str) -> str:
    """See names.with_subset (kept here for notebooks that call it)."""
    return names.with_subset(config_name, subset)
