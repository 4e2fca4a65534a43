"""How a run went, in words: the epoch lines, the end-of-run summary, and the
`Outcome` that callers and the summary read."""

from __future__ import annotations

import dataclasses

import jax
from absl import logging

from astrom3_jax.training.tasks import Task


@dataclasses.dataclass
class Outcome:
    """How a run ended, for the summary and for callers.

    A run stopped by a user error (NaN loss, failed save) attaches its
    Outcome, reason 'stopped', to the error as `error.outcome`.
    """

    reason: str  # 'finished' | 'early_stopped' | 'already_finished' | 'stopped'
    last: dict
    best_step: int | None
    best_metrics: dict
    checkpoint_dir: str
    latest_step: int | None = None


def say(message: str) -> None:
    """A line for the person at the terminal (process 0 only)."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


def epoch_line(m: dict) -> str:
    """One short epoch line (every metric is in metrics.jsonl and TensorBoard)."""
    names = {
        "train_loss": "loss",
        "val_loss": "val_loss",
        "val_accuracy": "val_acc",
        "val_balanced_accuracy": "val_bal_acc",
        "lr": "lr",
        "train_samples_per_s": "samples/s",
    }
    out = [f"{short}={m[k]:.4g}" for k, short in names.items() if k in m]
    recall = [v for k, v in m.items() if k.startswith("val_full_recall@1/")]
    if recall:
        out.append(f"val_recall@1={sum(recall) / len(recall):.3f} (mean)")
    return ", ".join(out)


def describe(outcome: Outcome, task: Task) -> str:
    """The end-of-run summary printed by the command lines: why it stopped,
    how many epochs, the best checkpoint and its metrics, checkpoint paths."""
    why = {
        "finished": "reached num_epochs",
        "early_stopped": "early stopping on the validation loss",
        "already_finished": "nothing to do: this workdir's run had already ended",
        "stopped": "stopped by an error (see the error message)",
    }[outcome.reason]
    epochs = outcome.last.get("epoch", -1) + 1
    lines = [f"run ended: {why}; {epochs} epochs"]
    where = outcome.checkpoint_dir
    if outcome.best_step is not None:
        m = outcome.best_metrics
        shown = ", ".join(
            f"{k}={m[k]:.4g}"
            for k in ("epoch", "val_loss", task.best_metric)
            if isinstance(m.get(k), int | float)
        )
        lines.append(
            f"best checkpoint: step {outcome.best_step} ({shown}): "
            f"{where}/{outcome.best_step}"
        )
    if outcome.latest_step is not None:
        lines.append(
            f"latest checkpoint: step {outcome.latest_step}: "
            f"{where}/{outcome.latest_step}"
        )
    lines.append(f"checkpoints: {where}")
    return "\n".join(lines)


def say_where_it_stopped(error: BaseException, task: Task) -> None:
    """The summary of a run that `error` stopped (if it carries one)."""
    outcome = getattr(error, "outcome", None)
    if isinstance(outcome, Outcome):
        say(describe(outcome, task))
