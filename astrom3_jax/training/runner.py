"""`run(config, workdir)`: the one entry to pre-training and fine-tuning.

The config says everything: `config.model.task` picks the task, and
`config.evals` what is scored each epoch and once training has ended.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import ml_collections

from astrom3_jax import errors
from astrom3_jax.data import datasets
from astrom3_jax.training import (
    calibration_files,
    checkpoints,
    evaluators,
    init_from,
    loop,
    tasks,
    validate,
)
from astrom3_jax.training import outcome as outcome_lib
from astrom3_jax.training import reports as reports_lib

TRAIN_SPLITS = ("train", "validation")


@dataclasses.dataclass
class Result:
    """How a run ended and what its end-of-run evaluators reported."""

    outcome: outcome_lib.Outcome
    reports: dict  # {evals name: report}

    @property
    def last(self) -> dict:
        """The last epoch's metrics."""
        return self.outcome.last


def check(config, workdir: str) -> None:
    """Everything that can be refused before data is read: the config (once),
    the architecture taken from `init_from`, and the workdir's own config."""
    validate.check_config(config)
    if init_from.take_architecture(config, say=outcome_lib.say):
        validate.check_config(config)  # the sizes it took must fit the rest
    checkpoints.check_config(workdir, config)


def open_sources(config, workdir: str) -> dict:
    """The splits the run reads (synthetic data sets are generated), with the
    training split's normalisation statistics recorded in the workdir."""
    splits = tuple(dict.fromkeys([*TRAIN_SPLITS, *evaluators.end_splits(config)]))
    data_dir = config.data_dir or None
    sources = datasets.open_sources(config.dataset, splits, data_dir)
    datasets.record_stats(config.dataset, data_dir, workdir)
    return sources


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    sources: Mapping | None = None,
    build_fn: Callable | None = None,
    before_training: Callable[[], None] | None = None,
) -> Result:
    """Train (or resume) in `workdir`, then run the end-of-run evaluators.

    `sources` ({split: random-access source}) replaces the data set and
    `build_fn(model_config, rngs)` the model builder (tests, notebooks);
    `before_training()` runs once config and workdir are accepted.
    """
    check(config, workdir)
    task = tasks.for_config(config)
    if sources is None:
        sources = open_sources(config, workdir)
    try:
        outcome = loop.train(
            config,
            workdir,
            task,
            sources,
            build_fn=build_fn,
            before_training=before_training,
        )
    except errors.UserError as e:
        outcome_lib.say_where_it_stopped(e, task)
        raise
    outcome_lib.say(outcome_lib.describe(outcome, task))
    reports = evaluators.run_end(config, workdir, sources, build_fn=build_fn)
    for name, report in reports.items():
        outcome_lib.say(_report_line(name, report, workdir))
    return Result(outcome, reports)


def _report_line(name: str, report: dict, workdir: str) -> str:
    if "temperature" in report:
        (before, after) = report["validation_ece"]
        return (
            f"{name}: temperature {report['temperature']:.3f} (validation ECE "
            f"{before:.4f} -> {after:.4f}); wrote "
            + os.path.join(workdir, calibration_files.CALIBRATION_FILE)
        )
    held = report.get("withheld") or []
    return (
        f"{name}: accuracy={report['accuracy']:.4f}, balanced accuracy="
        f"{report['balanced_accuracy']:.4f}, macro F1={report['macro_f1']:.4f} "
        f"over {report['count']} objects; wrote "
        + os.path.join(workdir, reports_lib.eval_file(held))
    )
