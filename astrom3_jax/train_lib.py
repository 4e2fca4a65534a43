"""AstroM3 CLIP pre-training: `train_and_evaluate(config, workdir)`.

The loop itself is shared with fine-tuning (astrom3_jax/training/loop.py);
pre-training is the CLIP task (training/tasks.py): the symmetric InfoNCE
summed over every modality pair, over the global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ml_collections

from astrom3_jax.training import loop, tasks


def train_sources(config) -> dict:
    """Train/validation sources of `config.dataset` (synthetic ones generated)."""
    from astrom3_jax.data import datasets

    return datasets.open_sources(
        config.dataset, ("train", "validation"), config.data_dir or None
    )


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    sources: Mapping | None = None,
    build_fn: Callable | None = None,
    before_training: Callable[[], None] | None = None,
) -> loop.Outcome:
    """Pre-train (or resume) in `workdir`; returns how the run ended.

    `before_training()` runs once config and workdir are accepted (see
    loop.train).
    """
    from astrom3_jax.training import checkpoints, init_from, validate

    # Config mistakes and a workdir of another run fail before data is read.
    validate.check_config(config)
    init_from.take_architecture(config, say=loop.say)
    validate.check_config(config)
    checkpoints.check_config(workdir, config)
    if sources is None:
        from astrom3_jax.data import datasets

        sources = train_sources(config)
        datasets.record_stats(config.dataset, config.data_dir or None, workdir)
    return loop.train(
        config,
        workdir,
        tasks.clip_task(),
        sources,
        build_fn=build_fn,
        before_training=before_training,
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    sources: Mapping | None = None,
    build_fn: Callable | None = None,
) -> dict:
    """Pre-train (or resume) in `workdir`; returns the last epoch's metrics.

    `sources` ({'train': ..., 'validation': ...} random-access example
    sources) replaces the TFDS data set, and `build_fn(model_config, rngs)`
    the model builder; both are for tests and notebooks.
    """
    return run(config, workdir, sources=sources, build_fn=build_fn).last
