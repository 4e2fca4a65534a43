"""What a plan holds: each compiled step's figures and the whole run's estimate."""

from __future__ import annotations

import dataclasses

from astrom3_jax.training.planner.chips import Hardware


@dataclasses.dataclass
class StepPlan:
    """One compiled program's per-device figures and roofline estimate."""

    name: str
    global_batch: int
    memory: dict  # argument, temp, output, alias, peak (bytes per device)
    flops: float  # per device per step
    bytes: float  # HBM traffic per device per step
    est_step_s: float
    compute_s: float
    memory_s: float
    compile_s: float
    xla_optimal_s: float | None  # XLA's own cost model, where it gives one
    compiled: object = dataclasses.field(default=None, repr=False)
    args: tuple = dataclasses.field(default=(), repr=False)  # abstract arguments

    @property
    def est_samples_per_s(self) -> float:
        return self.global_batch / self.est_step_s

    @property
    def bound(self) -> str:
        return "memory" if self.memory_s >= self.compute_s else "compute"

    @property
    def flop_utilisation_ceiling(self) -> float:
        """The fraction of peak FLOP/s the roofline allows this step."""
        return self.compute_s / self.est_step_s


@dataclasses.dataclass
class Plan:
    """A slice's compiled steps and, given split sizes, the run's wall time."""

    topology: str
    hardware: Hardware
    dtype: str
    attention: str
    steps: dict[str, StepPlan]
    run: dict | None = None  # estimated wall time of the whole run

    @property
    def per_host_batch(self) -> int:
        return self.steps["train"].global_batch // self.hardware.hosts
