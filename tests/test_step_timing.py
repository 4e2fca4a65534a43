"""The benchmarks' step summary: median-based rate, mean and range."""

import pytest

from benchmarks import step_timing


def test_summary_uses_the_median_step_and_keeps_the_outlier_visible():
    # four steady 1.6 s steps and one 3.2 s step from a noisy neighbour
    stats = step_timing.summarize([1.6, 1.6, 3.2, 1.6, 1.6], batch_size=64)
    assert stats["steps"] == 5
    assert stats["samples_per_s"] == pytest.approx(64 / 1.6)
    assert stats["samples_per_s_mean"] == pytest.approx(64 / 1.92)
    assert stats["step_ms"] == pytest.approx(1600)
    assert (stats["step_ms_min"], stats["step_ms_max"]) == pytest.approx((1600, 3200))
    assert step_timing.describe(stats) == (
        "40.0 samples/s (median step 1600 ms, 1600-3200 over 5 steps; mean 33.3)"
    )


def test_summary_of_no_steps_is_an_error():
    with pytest.raises(ValueError, match="no timed steps"):
        step_timing.summarize([], batch_size=64)
