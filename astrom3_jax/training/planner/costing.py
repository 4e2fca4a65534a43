"""Compile a run's steps for a slice and read XLA's per-device memory and cost
analysis: a roofline estimate of each step (the larger of FLOPs / peak and
bytes / HBM bandwidth) and of the whole run. Real steps are slower
(collectives, latencies, the host); the first real run on a chip calibrates it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from astrom3_jax import errors
from astrom3_jax.training import sharding
from astrom3_jax.training.planner.chips import Hardware, hardware
from astrom3_jax.training.planner.estimates import run_time, split_sizes_of
from astrom3_jax.training.planner.plans import Plan, StepPlan
from astrom3_jax.training.planner.programs import STEPS, step_programs
from astrom3_jax.training.planner.topologies import topology_devices


def _memory(compiled) -> dict:
    """Per-device bytes of a compiled program, and its peak."""
    m = compiled.memory_analysis()
    arg, out = int(m.argument_size_in_bytes), int(m.output_size_in_bytes)
    alias, temp = int(m.alias_size_in_bytes), int(m.temp_size_in_bytes)
    peak = int(getattr(m, "peak_memory_in_bytes", 0) or 0)
    # Donated arguments are reused as outputs (alias): counted once.
    peak = max(peak, arg + out - alias + temp)
    return dict(argument=arg, temp=temp, output=out, alias=alias, peak=peak)


def compile_step(fn, args, hw: Hardware, name: str, global_batch: int) -> StepPlan:
    """Compile `fn` for `args` and estimate its step on `hw`."""
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
    """Bytes of the arrays in an HLO shape ('f32[4,8]', tuples summed)."""
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
    """The trainer's one-axis data mesh over `devices`."""
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
        for name, (fn, args) in step_programs(config, mesh, batches).items():
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
    """The photometry encoder's attention, '-' without photometry."""
    m = config.model
    return m.photometry.attention if "photometry" in m.modalities else "-"
