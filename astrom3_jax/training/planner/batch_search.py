"""The largest global train batch that fits in a device's HBM, found with a
few compiles (a line through two peaks, then bisection).
"""

from __future__ import annotations

from astrom3_jax import errors
from astrom3_jax.training.planner.chips import hardware
from astrom3_jax.training.planner.costing import plan
from astrom3_jax.training.planner.plans import Plan
from astrom3_jax.training.planner.topologies import topology_devices


def fits(p: Plan, name: str = "train") -> bool:
    """Whether step `name`'s peak memory fits in a device's HBM."""
    return p.steps[name].memory["peak"] <= p.hardware.hbm_bytes


def find_max_batch(
    config,
    topology: str,
    *,
    tolerance: float = 0.05,
    limit: int = 1 << 20,
    budget_bytes: int | None = None,
    devices=None,
):
    """The largest global train batch (a multiple of the device count) whose
    step fits in HBM, to within `tolerance`. Returns (batch, its Plan).

    Peak memory grows linearly with the batch (parameters and optimiser
    state are fixed, activations are per row): compiles at the config's
    batch and twice it give the line, the batch where it meets the HBM size
    is compiled next, then bisection between the largest batch seen to fit
    and the smallest seen not to, until they are within `tolerance`. A few
    compiles instead of one per doubling. `budget_bytes` (default: the
    device's HBM) leaves room for other things.
    """
    devices = devices if devices is not None else topology_devices(topology)
    n = len(devices)
    hbm = budget_bytes or hardware(devices).hbm_bytes

    def down(b):
        return max(int(b) // n * n, n)

    fitting: dict[int, Plan] = {}
    peaks: dict[int, int] = {}
    tried: set[int] = set()
    too_big: int | None = None

    def check(b):
        nonlocal too_big
        tried.add(b)
        try:
            p = plan(
                config, topology, global_batch=b, steps=("train",), devices=devices
            )
        except Exception as e:
            # Some compilers refuse a program over the HBM outright.
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            too_big = b if too_big is None else min(too_big, b)
            return
        p.run = None
        peaks[b] = p.steps["train"].memory["peak"]
        if peaks[b] <= hbm:
            fitting[b] = p
        else:
            too_big = b if too_big is None else min(too_big, b)

    b = down(config.batch_size)
    check(b)
    while not fitting:
        if b == n:
            raise errors.ConfigError(f"not even a batch of {n} fits on {topology}")
        b = down(b // 2)
        check(b)
    lo = max(fitting)
    if too_big is None and 2 * lo <= limit:
        check(2 * lo)
        if len(peaks) > 1:  # else 2 * lo did not even compile
            (b1, p1), (b2, p2) = sorted(peaks.items())[-2:]
            if p2 > p1:  # where the line through the two meets the HBM size
                guess = down(b1 + (hbm - p1) * (b2 - b1) / (p2 - p1))
                if guess not in tried and guess <= limit:
                    check(guess)
    for _ in range(12):
        lo = max(fitting)
        hi = too_big if too_big is not None else min(2 * lo, limit + n)
        if hi - lo <= max(n, tolerance * lo) or lo >= limit:
            break
        mid = down((lo + hi) // 2) if too_big is not None else down(hi)
        if mid in tried:
            break
        check(mid)
    lo = max(fitting)
    return lo, fitting[lo]
