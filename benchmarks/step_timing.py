"""Per-step timings summarised robustly, shared by the train-step benchmarks.

The 2-core VMs these benchmarks run on have noisy neighbours: one run of 20 s
can come out 30% slow when another machine is busy. A mean over the whole
run hides that; the median step and the range show it. Standard library
only, so that benchmarks/torch_train_step.py can use it from a venv without
the project.
"""

from __future__ import annotations

import statistics


def summarize(step_seconds: list[float], batch_size: int) -> dict:
    """samples/s from the median step and from the mean, and the step range."""
    if not step_seconds:
        raise ValueError("no timed steps to summarise")
    median = statistics.median(step_seconds)
    mean = statistics.fmean(step_seconds)
    return {
        "steps": len(step_seconds),
        "samples_per_s": batch_size / median,
        "samples_per_s_mean": batch_size / mean,
        "step_ms": 1e3 * median,
        "step_ms_min": 1e3 * min(step_seconds),
        "step_ms_max": 1e3 * max(step_seconds),
    }


def describe(stats: dict) -> str:
    """'39.5 samples/s (median step 1620 ms, 1601-1650 over 12 steps; mean 39.1)'."""
    return (
        f"{stats['samples_per_s']:.1f} samples/s (median step "
        f"{stats['step_ms']:.0f} ms, {stats['step_ms_min']:.0f}-"
        f"{stats['step_ms_max']:.0f} over {stats['steps']} steps; mean "
        f"{stats['samples_per_s_mean']:.1f})"
    )
