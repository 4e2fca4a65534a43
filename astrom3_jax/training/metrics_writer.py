"""Per-epoch metrics to `<workdir>/metrics.jsonl` and TensorBoard events.

TensorBoard files are written with tensorboardX (no TensorFlow). Only
process 0 writes; the others get a writer that does nothing. On resume the
lines of epochs that will be run again are dropped, so metrics.jsonl holds
each epoch exactly once even after a kill. metrics.jsonl keeps the metric
keys as they are; TensorBoard gets them respelled by `tensorboard_tag`.
"""

from __future__ import annotations

import json
import math
import os
import re

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
CONFIG_TAG = "config"  # TensorBoard shows it as config/text_summary

# What TensorBoard accepts in a tag; tensorboardX turns anything else to '_'.
_NOT_IN_TAG = re.compile(r"[^-/\w.]")


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag for a metrics key, spelled so it keeps its meaning.

    A tag may hold only letters, digits and `_ - . /`; tensorboardX replaces
    anything else with '_', so `val_recall@1/metadata->photometry` would
    show as `val_recall_1/metadata-_photometry`. Here `@` reads `_at_` and
    `->` reads `_to_` (`val_recall_at_1/metadata_to_photometry`). '/' stays:
    TensorBoard groups charts by the part before it. A pair `a-b` keeps its
    hyphen. Any other character still becomes '_', and a leading '/' is
    dropped, as tensorboardX would do.
    """
    tag = key.replace("->", "_to_").replace("@", "_at_")
    return _NOT_IN_TAG.sub("_", tag).lstrip("/")


def _plain(v):
    v = np.asarray(v).item() if not isinstance(v, str | int | float) else v
    return None if isinstance(v, float) and not math.isfinite(v) else v


class MetricsWriter:
    """Append-only JSON lines plus TensorBoard scalars for one workdir."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write_config(self, config_text: str) -> None:
        """Log the run's configuration (e.g. its JSON) as TensorBoard text.

        Call once per run, before training. It is shown as a code block
        under the tag `config/text_summary`, at step 0.
        """
        if self._tb is None:
            return
        self._tb.add_text(CONFIG_TAG, config_markdown(config_text), 0)
        self._tb.flush()

    def drop_from_epoch(self, epoch: int) -> None:
        """Forget lines with `epoch >= epoch` (they are about to be redone)."""
        if not self.active or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            keep = []
            for line in f:
                try:
                    if json.loads(line)["epoch"] < epoch:
                        keep.append(line)
                except (ValueError, KeyError):
                    pass  # a line cut short by a kill
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict) -> None:
        if not self.active:
            return
        row = {k: _plain(v) for k, v in metrics.items()}
        row["step"] = int(step)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k not in ("step",):
                    self._tb.add_scalar(tensorboard_tag(k), v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def config_markdown(config_text: str) -> str:
    """`config_text` as a Markdown code block (each line indented 4 spaces):
    TensorBoard renders text as Markdown, which would reflow the JSON."""
    return "\n".join("    " + line for line in config_text.splitlines())


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
