"""Per-epoch metrics to `<workdir>/metrics.jsonl` and TensorBoard events.

TensorBoard files are written with tensorboardX (no TensorFlow). Only
process 0 writes; the others get a writer that does nothing. On resume the
lines of epochs that will be run again are dropped, so metrics.jsonl holds
each epoch exactly once even after a kill.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"


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
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
