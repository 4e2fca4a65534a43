"""Ahead-of-time plans of a training run for a TPU slice, on any machine.

With libtpu installed (`pip install -e '.[tpu]'`), JAX describes a TPU
slice without having one (`jax.experimental.topologies.get_topology_desc`):
its devices can hold a mesh, and a function jitted over that mesh can be
lowered and compiled for it. XLA's TPU compiler then reports, per device,
the memory the program needs (arguments, temporaries, outputs) and its
cost (FLOPs, bytes moved to and from HBM). From those and the chip's
published peak FLOP/s and HBM bandwidth (CHIPS, with sources) follows a
roofline estimate of the step time: the larger of FLOPs / peak and
bytes / bandwidth. Real steps are slower (collectives, latencies, the host);
the first real run on a chip calibrates the estimate (the notebooks print
both).

The programs compiled are the trainer's own: `loop.make_train_step` (the
train step with the optimiser update, donated state) and the data-parallel
evaluation step at the validation and export batch sizes (`_steps`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import math
import os
import re
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from astrom3_jax import errors

STEPS = ("train", "eval", "export")


class MissingLibtpuError(errors.UserError, ImportError):
    """libtpu (the TPU compiler) is not installed."""


# ------------------------------------------------------------------ hardware


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
    return list(TOPOLOGIES)


def _require_libtpu() -> None:
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
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
    except ModuleNotFoundError:  # no jax_plugins package at all
        return False


def _gpu_devices(name: str) -> list:
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
    kind = devices[0].device_kind
    if kind not in CHIPS:
        raise errors.ConfigError(
            f"no published figures for {kind!r}; known: {list(CHIPS)}"
        )
    coords = [tuple(getattr(d, "coords", (d.id,))) for d in devices]
    per_chip = len(devices) // max(len(set(coords)), 1)
    hosts = len({d.process_index for d in devices})
    return Hardware(CHIPS[kind], len(devices), hosts, max(per_chip, 1))


# ------------------------------------------------------------------- inputs


def batch_shapes(config, rows: int) -> dict[str, jax.ShapeDtypeStruct]:
    """A batch of `rows` as the pipeline makes it: model inputs, label, mask."""
    m = config.model
    out = {}
    for name in m.modalities:
        c = m[name]
        if name == "photometry":
            out["photometry"] = ((config.seq_len, c.in_channels), jnp.float32)
            out["photometry_mask"] = ((config.seq_len,), jnp.float32)
        elif name == "spectra":
            out["spectra"] = ((c.conv_channels[0], c.length), jnp.float32)
        elif name == "metadata":
            out["metadata"] = ((c.input_dim,), jnp.float32)
        else:
            raise errors.ConfigError(
                f"plan does not know the inputs of modality {name!r}"
            )
    out["label"] = ((), jnp.int32)
    out["mask"] = ((), jnp.float32)
    return {k: jax.ShapeDtypeStruct((rows, *s), d) for k, (s, d) in out.items()}


def _place(tree, sharding):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
    )


def _abstract_parts(config):
    """(train/eval graphdefs, abstract state, frozen, rest, optimiser, task)."""
    from astrom3_jax.models import build_model
    from astrom3_jax.training import loop, optim, tasks

    task = tasks.for_config(config)
    model = nnx.eval_shape(lambda: build_model(config.model, nnx.Rngs(config.seed)))
    parts = loop.split_model(model, task.trainable(config))
    tx = optim.make_optimizer(config)
    state = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": parts.params,
        "opt_state": jax.eval_shape(tx.init, parts.params),
    }
    return parts, state, tx, task


def _steps(config, mesh, batches: dict[str, int]) -> dict:
    """{name: (jitted step, abstract arguments)} for the programs to plan.

    The one place that knows which functions the trainer and the export run.
    """
    from astrom3_jax.training import evaluation, loop, sharding

    parts, state, tx, task = _abstract_parts(config)
    rep = NamedSharding(mesh, P())
    rows = NamedSharding(mesh, P(sharding.AXIS))
    key = _place(jax.eval_shape(lambda: jax.random.key(0)), rep)
    frozen, rest = _place(parts.frozen, rep), _place(parts.rest, rep)
    out = {}
    if "train" in batches:
        step = loop.make_train_step(parts.train_def, tx, mesh, task)
        lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
        batch = _place(batch_shapes(config, batches["train"]), rows)
        out["train"] = (step, (_place(state, rep), frozen, rest, batch, lr, key))
    # Validation runs the task's eval function; the export (and predict) the
    # model's own per-row outputs: both through the one evaluation path.
    outputs_fns = {"eval": task.eval_fn, "export": evaluation.model_outputs}
    for name, outputs_fn in outputs_fns.items():
        if name in batches:
            step = evaluation.make_predict_step(parts.eval_def, mesh, outputs_fn)
            batch = _place(batch_shapes(config, batches[name]), rows)
            params = _place(state["params"], rep)
            out[name] = (step, (params, frozen, rest, batch, key))
    return out


# ------------------------------------------------------------------ the plan


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
    topology: str
    hardware: Hardware
    dtype: str
    attention: str
    steps: dict[str, StepPlan]
    run: dict | None = None  # estimated wall time of the whole run

    @property
    def per_host_batch(self) -> int:
        return self.steps["train"].global_batch // self.hardware.hosts


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    arg, out = int(m.argument_size_in_bytes), int(m.output_size_in_bytes)
    alias, temp = int(m.alias_size_in_bytes), int(m.temp_size_in_bytes)
    peak = int(getattr(m, "peak_memory_in_bytes", 0) or 0)
    # Donated arguments are reused as outputs (alias): counted once.
    peak = max(peak, arg + out - alias + temp)
    return dict(argument=arg, temp=temp, output=out, alias=alias, peak=peak)


def compile_step(fn, args, hw: Hardware, name: str, global_batch: int) -> StepPlan:
    t0 = time.time()
    compiled = fn.lower(*args).compile()
    compile_s = time.time() - t0
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per program
        cost = cost[0]
    if not cost:
        # Compile-only GPU targets give no cost analysis: the traffic of each
        # kernel of the optimised program (its operands and results), and no
        # FLOPs, so the estimate is the memory-bound time.
        cost = {"flops": 0.0, "bytes accessed": kernel_bytes(compiled.as_text())}
    flops = float(cost.get("flops", 0.0))
    moved = float(cost.get("bytes accessed", 0.0))
    compute_s, memory_s = flops / hw.peak_flops, moved / hw.hbm_bandwidth
    optimal = cost.get("optimal_seconds")
    return StepPlan(
        name=name,
        global_batch=global_batch,
        memory=_memory(compiled),
        flops=flops,
        bytes=moved,
        est_step_s=max(compute_s, memory_s),
        compute_s=compute_s,
        memory_s=memory_s,
        compile_s=compile_s,
        # XLA's own estimate; compile-only targets may give a meaningless one.
        xla_optimal_s=float(optimal) if optimal and optimal > 0 else None,
        compiled=compiled,
        args=args,
    )


_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}
_ITEM_BYTES.update({"f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8})
_NO_TRAFFIC = ("parameter", "tuple", "get-tuple-element", "bitcast", "constant")


def _shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
        if dtype in _ITEM_BYTES:
            total += _ITEM_BYTES[dtype] * math.prod(
                int(d) for d in dims.split(",") if d
            )
    return total


def kernel_bytes(hlo_text: str) -> float:
    """HBM traffic of an optimised program, one kernel per top-level
    instruction: each reads its operands and writes its result."""
    entry = hlo_text[hlo_text.index("\nENTRY") :]
    sizes, total = {}, 0
    line_re = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*?)\)")
    for line in entry.splitlines()[1:]:
        m = line_re.match(line)
        if not m:
            continue
        name, shape, op, operands = m.groups()
        sizes[name] = _shape_bytes(shape)
        if op in _NO_TRAFFIC:
            continue
        used = re.findall(r"%([\w.\-]+)", operands)
        total += sizes[name] + sum(sizes.get(o, 0) for o in used)
    return float(total)


def make_mesh(devices) -> Mesh:
    from astrom3_jax.training import sharding

    return Mesh(np.asarray(devices), (sharding.AXIS,), axis_types=(AxisType.Explicit,))


def plan(
    config,
    topology: str,
    *,
    global_batch: int | None = None,
    eval_batch: int | None = None,
    export_batch: int = 256,
    steps: Sequence[str] = STEPS,
    split_sizes: dict | None = None,
    devices=None,
) -> Plan:
    """Compile the run's steps for `topology` and estimate their speed.

    `global_batch` (default config.batch_size) is the train step's batch;
    `split_sizes` ({'train': n, 'validation': n}) gives the run's wall time
    (default: the known sizes of config.dataset, see `split_sizes_of`).
    """
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        raise errors.ConfigError(
            f"steps must be among {list(STEPS)}, got {list(steps)}"
        )
    devices = devices if devices is not None else topology_devices(topology)
    hw = hardware(devices)
    mesh = make_mesh(devices)
    batches = {
        "train": global_batch or config.batch_size,
        "eval": eval_batch or config.eval_batch_size,
        "export": export_batch,
    }
    batches = {k: v for k, v in batches.items() if k in steps}
    for name, b in batches.items():
        if b % hw.devices:
            raise errors.ConfigError(
                f"the {name} batch {b} does not divide over the {hw.devices} devices "
                f"of {topology}; use a multiple of {hw.devices}"
            )
    out = {}
    with jax.set_mesh(mesh):
        for name, (fn, args) in _steps(config, mesh, batches).items():
            out[name] = compile_step(fn, args, hw, name, batches[name])
    result = Plan(
        topology=topology,
        hardware=hw,
        dtype=str(config.model.dtype),
        attention=_attention(config),
        steps=out,
    )
    sizes = split_sizes if split_sizes is not None else split_sizes_of(config.dataset)
    if sizes and "train" in out:
        result.run = run_time(result, config, sizes)
    return result


def _attention(config) -> str:
    m = config.model
    return m.photometry.attention if "photometry" in m.modalities else "-"


def fits(p: Plan, name: str = "train") -> bool:
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
    too_big: int | None = None

    def check(b):
        nonlocal too_big
        p = plan(config, topology, global_batch=b, steps=("train",), devices=devices)
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
        (b1, p1), (b2, p2) = sorted(peaks.items())[-2:]
        if p2 > p1:  # where the line through the two meets the HBM size
            guess = down(b1 + (hbm - p1) * (b2 - b1) / (p2 - p1))
            if guess not in peaks and guess <= limit:
                check(guess)
    for _ in range(12):
        lo = max(fitting)
        hi = too_big if too_big is not None else min(2 * lo, limit + n)
        if hi - lo <= max(n, tolerance * lo) or lo >= limit:
            break
        mid = down((lo + hi) // 2) if too_big is not None else down(hi)
        if mid in peaks:
            break
        check(mid)
    lo = max(fitting)
    return lo, fitting[lo]


# ---------------------------------------------------------------- wall time

# (train, validation, test) objects of the real release's splits (seed 42;
# other seeds differ by a few objects). sub50's validation and test sizes are
# not published; they are taken as half of full's, as its training set is.
RELEASE_SPLITS = {
    "full": (17063, 2152, 2225),
    "sub50": (8526, 1076, 1112),
    "sub25": (4260, 532, 555),
    "sub10": (1660, 210, 220),
}


def split_sizes_of(dataset: str) -> dict | None:
    """{'train', 'validation', 'test'} sizes of a real-release data set name
    ('full_42', 'sub10_0'); None for others (pass split sizes instead)."""
    subset = dataset.split("_")[0]
    if dataset.startswith("synthetic") or subset not in RELEASE_SPLITS:
        return None
    return dict(
        zip(("train", "validation", "test"), RELEASE_SPLITS[subset], strict=True)
    )


def run_time(p: Plan, config, sizes: dict) -> dict:
    """A run's wall time at the roofline speed, every epoch run (no early
    stop): a lower bound for that many epochs, as real steps are slower."""
    train = p.steps["train"]
    steps_per_epoch = sizes["train"] // train.global_batch
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    eval_s = 0.0
    if "eval" in p.steps:
        ev = p.steps["eval"]
        eval_s = math.ceil(sizes.get("validation", 0) / ev.global_batch) * ev.est_step_s
    epoch_s = steps_per_epoch * train.est_step_s + eval_s
    total = config.num_epochs * epoch_s
    finetune = config.model.task == "classification"
    if finetune and "eval" in p.steps and sizes.get("test"):  # the test pass
        ev = p.steps["eval"]
        total += math.ceil(sizes["test"] / ev.global_batch) * ev.est_step_s
    return dict(
        epochs=int(config.num_epochs),
        steps_per_epoch=int(steps_per_epoch),
        train_objects=int(sizes["train"]),
        epoch_s=epoch_s,
        total_s=total,
    )


def finetune_grid(topology: str, *, dtype: str = "float32", devices=None) -> dict:
    """Estimated wall time of the 32 published fine-tuning runs on `topology`.

    The step costs depend on the mode only (a subset changes the number of
    steps; scratch or CLIP start, only the numbers): one plan per mode at
    the full subset, then each run's epochs x steps of its subset.
    """
    from astrom3_jax.configs import finetune

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


def grid_to_json(grid: dict) -> dict:
    return dict(
        topology=grid["topology"],
        total_s=grid["total_s"],
        runs=grid["runs"],
        modes={m: to_json(p) for m, p in grid["modes"].items()},
    )


def format_grid(grid: dict) -> str:
    lines = []
    for p in grid["modes"].values():
        lines += [format_plan(p), ""]
    lines.append(
        f"fine-tuning grid on {grid['topology']} at the roofline speed, "
        "every epoch (no early stop):"
    )
    for r in grid["runs"]:
        name = f"{r['mode']},{r['subset']}" + (",clip" if r["clip"] else "")
        lines.append(
            f"  {name:<18} {r['epochs']} epochs x {r['steps_per_epoch']:>3} steps: "
            f"{_duration(r['total_s'])}"
        )
    lines.append(f"  all 32 runs: {_duration(grid['total_s'])}")
    return "\n".join(lines)


# ------------------------------------------------------------------- output


def to_json(p: Plan) -> dict:
    """The figures for programs (the --json file)."""
    hw = p.hardware

    def step(s: StepPlan) -> dict:
        return {
            "global_batch": s.global_batch,
            "memory_per_device_bytes": {
                k: s.memory[k] for k in ("argument", "temp", "output", "peak")
            },
            "flops_per_step": s.flops,
            "bytes_per_step": s.bytes,
            "est_step_s": s.est_step_s,
            "est_samples_per_s": s.est_samples_per_s,
            "bound": s.bound,
            "flop_utilisation_ceiling": s.flop_utilisation_ceiling,
            "xla_optimal_s": s.xla_optimal_s,
            "compile_s": s.compile_s,
        }

    train = p.steps.get("train") or next(iter(p.steps.values()))
    out = {
        "topology": p.topology,
        "devices": hw.devices,
        "hosts": hw.hosts,
        "device_kind": hw.chip.name,
        "global_batch": train.global_batch,
        "per_host_batch": train.global_batch // hw.hosts,
        "dtype": p.dtype,
        "attention": p.attention,
        "memory_per_device_bytes": step(train)["memory_per_device_bytes"],
        "hbm_per_device_bytes": hw.hbm_bytes,
        "flops_per_step": train.flops,
        "bytes_per_step": train.bytes,
        "est_step_s": train.est_step_s,
        "est_samples_per_s": train.est_samples_per_s,
        "peak_flops_per_device": hw.peak_flops,
        "hbm_bandwidth_per_device": hw.hbm_bandwidth,
        "chip_source": hw.chip.source,
    }
    out.update({name: step(s) for name, s in p.steps.items()})
    if p.run is not None:
        out["run"] = p.run
    return out


def _mib(n) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _duration(s: float) -> str:
    if s < 10:
        return f"{s:.2f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_plan(p: Plan) -> str:
    hw = p.hardware
    lines = [
        f"topology {p.topology}: {hw.devices} x {hw.chip.name}"
        + (
            f" TensorCore ({hw.devices_per_chip} per chip)"
            if hw.devices_per_chip > 1
            else ""
        )
        + f", {hw.hosts} host{'s' if hw.hosts > 1 else ''}; dtype {p.dtype}, "
        f"attention {p.attention}",
        f"per device: {_mib(hw.hbm_bytes)} HBM, "
        f"{hw.peak_flops / 1e12:.1f} TFLOP/s peak, "
        f"{hw.hbm_bandwidth / 1e9:.0f} GB/s ({hw.chip.source})",
    ]
    for s in p.steps.values():
        m = s.memory
        rows = s.global_batch // hw.devices
        lines += [
            f"{s.name} step: global batch {s.global_batch} ({rows} per device"
            + (f", {s.global_batch // hw.hosts} per host" if hw.hosts > 1 else "")
            + f"); compiled in {s.compile_s:.0f} s",
            f"  memory per device: arguments {_mib(m['argument'])}, temporaries "
            f"{_mib(m['temp'])}, outputs {_mib(m['output'])} (aliased "
            f"{_mib(m['alias'])}), peak {_mib(m['peak'])} of {_mib(hw.hbm_bytes)} "
            f"({100 * m['peak'] / hw.hbm_bytes:.0f}%)"
            + ("" if m["peak"] <= hw.hbm_bytes else "  DOES NOT FIT"),
            "  per device per step: "
            + (f"{s.flops / 1e9:.1f} GFLOP, " if s.flops else "FLOPs not reported, ")
            + f"{s.bytes / 1e9:.2f} GB "
            f"({s.flops / max(s.bytes, 1):.1f} FLOP/byte; "
            f"{s.bytes / s.global_batch * hw.devices / 1e6:.1f} MB per sample)",
            f"  roofline: {1e3 * s.est_step_s:.2f} ms/step ({s.bound}-bound; compute "
            f"{1e3 * s.compute_s:.2f} ms, memory {1e3 * s.memory_s:.2f} ms) = "
            f"{s.est_samples_per_s:,.0f} samples/s; FLOP-utilisation ceiling "
            + (f"{100 * s.flop_utilisation_ceiling:.1f}%" if s.flops else "unknown"),
        ]
    if p.run is not None:
        r = p.run
        lines.append(
            f"whole run at the roofline speed, every epoch (no early stop): "
            f"{r['epochs']} epochs x "
            f"{r['steps_per_epoch']} steps ({r['train_objects']:,} objects) + "
            f"validation each epoch = {_duration(r['total_s'])} "
            f"({_duration(r['epoch_s'])} per epoch)"
        )
    return "\n".join(lines)
