r"""Plan a TPU run before it starts: compile its steps ahead of time, on any machine.

  python -m astrom3_jax.plan --config configs/pretrain.py:paper --topology v5e-8
  python -m astrom3_jax.plan --config configs/finetune.py:photo,full \
      --topology v2-8 --json plan.json
  python -m astrom3_jax.plan --config configs/pretrain.py:paper \
      --topology v6e-1 --find_max_batch
  python -m astrom3_jax.plan --config configs/finetune.py:all,full \
      --topology v5e-8 --finetune_grid

Needs libtpu (`pip install -e '.[tpu]'`), not a TPU. Prints, per device,
memory against HBM, FLOPs and HBM traffic per step, roofline estimates of
step time and samples/s, the FLOP-utilisation ceiling they imply, and the
estimated wall time of the whole run. Topologies: v2-8, v3-8, v4-8, v5e-1,
v5e-8, v6e-1, v6e-8, v5p-8, v5e-256, or any libtpu '<version>:<grid>' name.
Any config field can be overridden (`--config.model.dtype=bfloat16`).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from absl import flags
from ml_collections import config_flags

from astrom3_jax import cli

if TYPE_CHECKING:
    from astrom3_jax.training.planner import Plan, StepPlan

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags; defined when it runs as a command, so that importing
    this module (for its output functions) defines none."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/pretrain.py:paper", lock_config=True
    )
    flags.DEFINE_list(
        "topology", None, "TPU slice(s), e.g. v5e-8 or v2-8,v5e-8 (see the module doc)."
    )
    flags.DEFINE_integer(
        "batch_size", None, "Global train batch (default: the config's)."
    )
    flags.DEFINE_integer("export_batch_size", 256, "Global batch of the export step.")
    flags.DEFINE_list(
        "steps",
        ["train", "eval", "export"],
        "Which steps to compile (train,eval,export).",
    )
    flags.DEFINE_bool(
        "find_max_batch",
        False,
        "Search the largest global train batch that fits in HBM.",
    )
    flags.DEFINE_bool(
        "finetune_grid",
        False,
        "Estimate the 32-run fine-tuning grid (4 modes x 4 subsets x scratch/CLIP) "
        "on the real release, with the paper's per-run settings (--config gives "
        "only the compute dtype).",
    )
    flags.DEFINE_integer(
        "train_size", None, "Training objects (default: known release sizes)."
    )
    flags.DEFINE_integer("val_size", None, "Validation objects (with --train_size).")
    flags.DEFINE_integer(
        "test_size", 0, "Test objects (fine-tuning; with --train_size)."
    )
    flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
    flags.mark_flags_as_required(["config", "topology"])


def grid_to_json(grid: dict) -> dict:
    """The figures of a fine-tuning grid (the --json file)."""
    return dict(
        topology=grid["topology"],
        total_s=grid["total_s"],
        runs=grid["runs"],
        modes={m: to_json(p) for m, p in grid["modes"].items()},
    )


def format_grid(grid: dict) -> str:
    """Each mode's plan, then every run's and the whole grid's wall time."""
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
    """Bytes in MiB, for people."""
    return f"{n / 2**20:,.0f} MiB"


def _duration(s: float) -> str:
    """Seconds in s, min or h, for people."""
    if s < 10:
        return f"{s:.2f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_plan(p: Plan) -> str:
    """A plan as the command prints it."""
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


def main(argv):
    if len(argv) > 1:
        raise cli.errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    # Compile-only TPU devices need no TPU backend in this process; on a
    # machine without TPUs, starting one only prints libtpu's complaints.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # Imported here, not at the top: JAX reads JAX_PLATFORMS once, when it is
    # imported, and the planner imports JAX.
    from astrom3_jax.training import planner

    sizes = None
    if FLAGS.train_size:
        sizes = {
            "train": FLAGS.train_size,
            "validation": FLAGS.val_size or 0,
            "test": FLAGS.test_size,
        }
    results = []
    for topology in FLAGS.topology:
        if FLAGS.finetune_grid:
            grid = planner.finetune_grid(topology, dtype=FLAGS.config.model.dtype)
            print(format_grid(grid), flush=True)
            results.append(grid_to_json(grid))
            continue
        if FLAGS.find_max_batch:
            batch, _ = planner.find_max_batch(FLAGS.config, topology)
            print(f"largest global train batch that fits on {topology}: {batch}")
        else:
            batch = FLAGS.batch_size
        p = planner.plan(
            FLAGS.config,
            topology,
            global_batch=batch,
            export_batch=FLAGS.export_batch_size,
            steps=FLAGS.steps,
            split_sizes=sizes,
        )
        print(format_plan(p), flush=True)
        out = to_json(p)
        if FLAGS.find_max_batch:
            out["max_global_batch"] = batch
        results.append(out)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results[0] if len(results) == 1 else results, f, indent=1)


if __name__ == "__main__":
    define_flags()
    cli.main(main, cache_compiles=False)
