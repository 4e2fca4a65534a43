"""Which JAX platform a command runs on, decided before JAX starts.

An accelerator runtime installed on a machine without the chip (libtpu from
the `tpu` extra, which `plan` needs, or a CUDA plugin) makes JAX try it
first: libtpu then prints a screen of warnings in every process before JAX
falls back to the CPU. Commands pin JAX to the CPU when no accelerator
device node exists and JAX_PLATFORMS is unset; JAX_PLATFORMS always wins.
"""

from __future__ import annotations

import glob
import os
import sys

# Device nodes of NVIDIA GPUs, AMD GPUs (ROCm), TPU v2-v4 and TPU v5e and later.
ACCELERATOR_DEVICES = (
    "/dev/nvidia[0-9]*",
    "/dev/kfd",
    "/dev/accel[0-9]*",
    "/dev/vfio/[0-9]*",
)


def accelerator_device() -> str | None:
    """The first accelerator device node on this machine, or None."""
    for pattern in ACCELERATOR_DEVICES:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def pin_cpu_without_accelerator() -> bool:
    """Set JAX_PLATFORMS=cpu when it is unset and no accelerator exists.

    Returns whether it pinned. Works before JAX's backends start, also when
    JAX is already imported; subprocesses inherit the setting.
    """
    if os.environ.get("JAX_PLATFORMS", "").strip() or accelerator_device():
        return False
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")
    return True
