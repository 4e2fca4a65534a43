"""Published figures of the chips a plan can target (peak FLOP/s, HBM size
and bandwidth, with sources) and what one device of a slice gets of them:
the denominators of every roofline estimate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from astrom3_jax import errors


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published figures of one accelerator chip (dense bf16 matmul peak)."""

    name: str
    peak_flops: float  # FLOP/s per chip, bfloat16 dense
    hbm_bytes: int  # per chip
    hbm_bandwidth: float  # bytes/s per chip
    source: str


GiB = 2**30

# Keyed by jax's `device_kind`. float32 matmuls on TPU run on the same bf16
# MXUs (JAX's default precision), so one peak serves both dtypes.
CHIPS = {
    "TPU v2": Chip(
        "TPU v2",
        46e12,
        16 * GiB,
        700e9,
        "Jouppi et al., 'A domain-specific supercomputer for training deep "
        "neural networks', CACM 63(7), 2020, Table 3",
    ),
    "TPU v3": Chip(
        "TPU v3",
        123e12,
        32 * GiB,
        900e9,
        "Cloud TPU docs, 'TPU v3' system architecture",
    ),
    "TPU v4": Chip(
        "TPU v4",
        275e12,
        32 * GiB,
        1200e9,
        "Cloud TPU docs, 'TPU v4' system architecture",
    ),
    "TPU v5 lite": Chip(
        "TPU v5e",
        197e12,
        16 * GiB,
        819e9,
        "Cloud TPU docs, 'TPU v5e' system architecture",
    ),
    "TPU v5": Chip(
        "TPU v5p",
        459e12,
        95 * GiB,
        2765e9,
        "Cloud TPU docs, 'TPU v5p' system architecture",
    ),
    "TPU v6 lite": Chip(
        "TPU v6e",
        918e12,
        32 * GiB,
        1640e9,
        "Cloud TPU docs, 'TPU v6e' system architecture",
    ),
    # GPUs (compile-only targets, see GPU_TARGETS): dense bf16 tensor peak.
    "NVIDIA H100 80GB HBM3": Chip(
        "H100 SXM",
        989e12,
        80 * GiB,
        3.35e12,
        "NVIDIA H100 Tensor Core GPU datasheet (SXM5)",
    ),
    "NVIDIA A100-SXM4-80GB": Chip(
        "A100 SXM 80GB",
        312e12,
        80 * GiB,
        2.039e12,
        "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB)",
    ),
}


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What one device of a slice has (a chip, or one TensorCore of it)."""

    chip: Chip
    devices: int
    hosts: int
    devices_per_chip: int

    @property
    def peak_flops(self) -> float:
        return self.chip.peak_flops / self.devices_per_chip

    @property
    def hbm_bytes(self) -> int:
        return self.chip.hbm_bytes // self.devices_per_chip

    @property
    def hbm_bandwidth(self) -> float:
        return self.chip.hbm_bandwidth / self.devices_per_chip


def hardware(devices: Sequence) -> Hardware:
    """The chip, device, host and devices-per-chip counts of `devices`."""
    kind = devices[0].device_kind
    if kind not in CHIPS:
        raise errors.ConfigError(
            f"no published figures for {kind!r}; known: {list(CHIPS)}"
        )
    coords = [tuple(getattr(d, "coords", (d.id,))) for d in devices]
    per_chip = len(devices) // max(len(set(coords)), 1)
    hosts = len({d.process_index for d in devices})
    return Hardware(CHIPS[kind], len(devices), hosts, max(per_chip, 1))
