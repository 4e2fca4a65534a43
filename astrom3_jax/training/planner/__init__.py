"""Ahead-of-time plans of a training run for a TPU slice or GPU host, on any machine.

With libtpu (or JAX's CUDA plugin) JAX describes devices it does not have;
the trainer's steps are compiled for them and XLA's memory and cost analysis
gives a roofline estimate (`python -m astrom3_jax.plan` prints it).
"""

from astrom3_jax.training.planner.batch_search import find_max_batch, fits
from astrom3_jax.training.planner.chips import CHIPS, Hardware, hardware
from astrom3_jax.training.planner.costing import kernel_bytes, plan
from astrom3_jax.training.planner.estimates import run_time, split_sizes_of
from astrom3_jax.training.planner.grid import finetune_grid
from astrom3_jax.training.planner.plans import Plan, StepPlan
from astrom3_jax.training.planner.programs import STEPS
from astrom3_jax.training.planner.topologies import (
    TOPOLOGIES,
    MissingLibtpuError,
    cuda_plugin_installed,
    topology_devices,
    topology_names,
)

__all__ = [
    "CHIPS",
    "STEPS",
    "TOPOLOGIES",
    "Hardware",
    "MissingLibtpuError",
    "Plan",
    "StepPlan",
    "cuda_plugin_installed",
    "finetune_grid",
    "find_max_batch",
    "fits",
    "hardware",
    "kernel_bytes",
    "plan",
    "run_time",
    "split_sizes_of",
    "topology_devices",
    "topology_names",
]
