"""Compile-only devices of a TPU slice or GPU host, on any machine: named
slices (TOPOLOGIES) asked of libtpu, and GPUs described to JAX's CUDA
plugin from their datasheets (GPU_TARGETS).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import os
import tempfile

import jax

from astrom3_jax import errors


class MissingLibtpuError(errors.UserError, ImportError):
    """libtpu (the TPU compiler) is not installed."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """A named slice: how to ask libtpu for it, and what users call it."""

    name: str
    topology_name: str  # libtpu's '<version>:<chip grid>'
    chips_per_host_bounds: tuple[int, int, int] | None  # None: libtpu's default
    note: str


# Single-chip and single-host 8-chip v5e/v6e need their host bounds said:
# libtpu's default host is 2x2x1 chips, which a 1x1 slice does not divide
# and which would make a v5e-8 two hosts of four chips.
TOPOLOGIES = {
    t.name: t
    for t in (
        Topology("v2-8", "v2:2x2", None, "Colab's TPU v2 runtime (4 chips, 8 cores)"),
        Topology("v3-8", "v3:2x2", None, "4 chips, 8 cores"),
        Topology(
            "v4-8",
            "v4:2x2x1",
            None,
            "4 chips; compiled per TensorCore (8 devices), not as megacore",
        ),
        Topology("v5e-1", "v5e:1x1", (1, 1, 1), "Colab's single-chip v5e runtime"),
        Topology("v5e-8", "v5e:2x4", (2, 4, 1), "one host, 8 chips"),
        Topology("v6e-1", "v6e:1x1", (1, 1, 1), "Colab's single-chip v6e runtime"),
        Topology("v6e-8", "v6e:2x4", (2, 4, 1), "one host, 8 chips"),
        Topology("v5p-8", "v5p:2x2x1", None, "4 chips (megacore)"),
        Topology("v5e-256", "v5e:16x16", None, "64 hosts of 4 chips"),
    )
}


def topology_names() -> list[str]:
    """The named slices, in TOPOLOGIES' order."""
    return list(TOPOLOGIES)


def _require_libtpu() -> None:
    """Raise MissingLibtpuError, saying how to install it, without libtpu."""
    if importlib.util.find_spec("libtpu") is None:
        raise MissingLibtpuError(
            "planning for a TPU needs libtpu, the TPU compiler (it runs on any "
            "machine, no TPU needed): pip install -e '.[tpu]' "
            "(or pip install 'jax[tpu]==" + jax.__version__ + "')"
        )


@contextlib.contextmanager
def _quiet_stderr():
    """Swallow libtpu's start-up chatter on a machine without TPUs.

    It writes to file descriptor 2 from C++; shown again if anything fails.
    """
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# XLA's description of a GPU (a GpuTargetConfigProto, text format), from the
# vendors' published figures: what the CUDA compiler needs to compile for a
# GPU that is not there. Names: '<gpu>-<devices on the host>', e.g. h100-8.
_GPU_FIELDS = """gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {smem_core}
  threads_per_core_limit: 2048
  core_count: {sms}
  fpus_per_core: {fpus}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: {l2}
  clock_rate_ghz: {clock}
  device_memory_size: {memory}
  shared_memory_per_block_optin: {smem_block}
  cuda_compute_capability {{ major: {cc_major} minor: {cc_minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 patch: 0 }}
device_description_str: "{kind}"
"""
GPU_TARGETS = {
    "h100": dict(
        kind="NVIDIA H100 80GB HBM3",
        sms=132,
        fpus=128,
        smem_core=233472,
        smem_block=232448,
        bandwidth=3352320000000,
        l2=52428800,
        clock=1.98,
        memory=85899345920,
        cc_major=9,
        cc_minor=0,
    ),
    "a100": dict(
        kind="NVIDIA A100-SXM4-80GB",
        sms=108,
        fpus=64,
        smem_core=167936,
        smem_block=166912,
        bandwidth=2039000000000,
        l2=41943040,
        clock=1.41,
        memory=85899345920,
        cc_major=8,
        cc_minor=0,
    ),
}


def cuda_plugin_installed() -> bool:
    """Whether JAX's CUDA compiler plugin (needed for GPU plans) is installed."""
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
    except ModuleNotFoundError:  # no jax_plugins package at all
        return False


def _gpu_devices(name: str) -> list:
    """Compile-only devices of a GPU host ('h100-8'), from GPU_TARGETS."""
    gpu, _, count = name.partition("-")
    if not count.isdigit() or int(count) < 1:
        raise errors.ConfigError(f"GPU topologies are '<gpu>-<count>', e.g. {gpu}-8")
    if not cuda_plugin_installed():
        raise MissingLibtpuError(
            "planning for a GPU needs JAX's CUDA compiler plugin (no GPU needed): "
            f"pip install --no-deps jax-cuda12-pjrt=={jax.__version__} "
            f"jax-cuda12-plugin=={jax.__version__}"
        )
    from jax.experimental import topologies

    # The CUDA libraries' version check needs the libraries; compiling does not.
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    desc = topologies.get_topology_desc(
        platform="cuda",
        topology_name=name,
        topology=f"1x1x{int(count)}",
        target_config=_GPU_FIELDS.format(**GPU_TARGETS[gpu]),
    )
    return list(desc.devices)


def topology_devices(name: str) -> list:
    """Compile-only devices of a named slice (TOPOLOGIES), a raw libtpu name,
    or a GPU host ('h100-8', 'a100-1'; GPU_TARGETS).

    Raw names ('v5e:4x4') take libtpu's default host bounds.
    """
    if name.partition("-")[0] in GPU_TARGETS:
        return _gpu_devices(name)
    _require_libtpu()
    from jax.experimental import topologies

    topo = TOPOLOGIES.get(name)
    if topo is None:
        if ":" not in name:
            raise errors.ConfigError(
                f"unknown topology {name!r}; choose from {topology_names()} or give "
                "libtpu's '<version>:<grid>' (e.g. 'v5e:4x4')"
            )
        topo = Topology(name, name, None, "")
    if not glob.glob("/dev/accel*") and not glob.glob("/dev/vfio/[0-9]*"):
        # No TPU here: libtpu's one-process lockfile guards nothing, and
        # would stop two plans (or a plan and a test) running at once.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    kwargs = {}
    if topo.chips_per_host_bounds is not None:
        kwargs["chips_per_host_bounds"] = topo.chips_per_host_bounds
    try:
        with _quiet_stderr():
            desc = topologies.get_topology_desc(
                platform="tpu", topology_name=topo.topology_name, **kwargs
            )
    except jax.errors.JaxRuntimeError as e:
        raise errors.ConfigError(
            f"libtpu refused topology {name!r} ({topo.topology_name}): {e}"
        ) from e
    return list(desc.devices)
