"""Estimated wall time of the 32 published fine-tuning runs on a slice: one
plan per mode, then each run's epochs x steps of its subset.
"""

from __future__ import annotations

from astrom3_jax.configs import finetune
from astrom3_jax.training.planner.costing import plan
from astrom3_jax.training.planner.estimates import run_time, split_sizes_of
from astrom3_jax.training.planner.topologies import topology_devices


def finetune_grid(topology: str, *, dtype: str = "float32", devices=None) -> dict:
    """Estimated wall time of the 32 published fine-tuning runs on `topology`.

    The step costs depend on the mode only (a subset changes the number of
    steps; scratch or CLIP start, only the numbers): one plan per mode at
    the full subset, then each run's epochs x steps of its subset.
    """
    devices = devices if devices is not None else topology_devices(topology)
    modes, runs = {}, []
    for mode in finetune.MODES:
        config = finetune.get_config(f"{mode},full")
        config.model.dtype = dtype
        p = plan(config, topology, steps=("train", "eval"), devices=devices)
        modes[mode] = p
        for subset in finetune.SUBSETS:
            for clip in (False, True):
                c = finetune.get_config(f"{mode},{subset}" + (",clip" if clip else ""))
                r = run_time(p, c, split_sizes_of(c.dataset))
                runs.append(dict(mode=mode, subset=subset, clip=clip, **r))
    return dict(
        topology=topology,
        modes=modes,
        runs=runs,
        total_s=sum(r["total_s"] for r in runs),
    )
