r"""Plan a TPU run before it starts: compile its steps ahead of time, on any machine.

  python -m astrom3_jax.plan --config configs/pretrain.py:paper --topology v5e-8
  python -m astrom3_jax.plan --config configs/finetune.py:photo,full \
      --topology v2-8 --json plan.json
  python -m astrom3_jax.plan --config configs/pretrain.py:paper \
      --topology v6e-1 --find_max_batch
  python -m astrom3_jax.plan --config configs/finetune.py:all,full \
      --topology v5e-8 --finetune_grid

Needs libtpu (`pip install -e '.[tpu]'`), not a TPU. Compiles the train
step, the validation step and the export step for the topology and prints,
per device, memory against HBM, FLOPs and HBM traffic per step, a roofline
estimate of step time and samples/s, the FLOP-utilisation ceiling it
implies, and the estimated wall time of the whole run. Topologies:
v2-8, v3-8, v4-8, v5e-1, v5e-8, v6e-1, v6e-8, v5p-8, v5e-256, or any
libtpu '<version>:<grid>' name. Any config field can be overridden
(`--config.model.dtype=bfloat16`).
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from astrom3_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/pretrain.py:paper", lock_config=True
)
flags.DEFINE_list(
    "topology", None, "TPU slice(s), e.g. v5e-8 or v2-8,v5e-8 (see the module doc)."
)
flags.DEFINE_integer("batch_size", None, "Global train batch (default: the config's).")
flags.DEFINE_integer("export_batch_size", 256, "Global batch of the export step.")
flags.DEFINE_list(
    "steps", ["train", "eval", "export"], "Which steps to compile (train,eval,export)."
)
flags.DEFINE_bool(
    "find_max_batch", False, "Search the largest global train batch that fits in HBM."
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
flags.DEFINE_integer("test_size", 0, "Test objects (fine-tuning; with --train_size).")
flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
flags.mark_flags_as_required(["config", "topology"])


def main(argv):
    if len(argv) > 1:
        raise cli.errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    # Compile-only TPU devices need no TPU backend in this process; on a
    # machine without TPUs, starting one only prints libtpu's complaints.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from astrom3_jax.training import aot

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
            grid = aot.finetune_grid(topology, dtype=FLAGS.config.model.dtype)
            print(aot.format_grid(grid), flush=True)
            results.append(aot.grid_to_json(grid))
            continue
        if FLAGS.find_max_batch:
            batch, _ = aot.find_max_batch(FLAGS.config, topology)
            print(f"largest global train batch that fits on {topology}: {batch}")
        else:
            batch = FLAGS.batch_size
        p = aot.plan(
            FLAGS.config,
            topology,
            global_batch=batch,
            export_batch=FLAGS.export_batch_size,
            steps=FLAGS.steps,
            split_sizes=sizes,
        )
        print(aot.format_plan(p), flush=True)
        out = aot.to_json(p)
        if FLAGS.find_max_batch:
            out["max_global_batch"] = batch
        results.append(out)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results[0] if len(results) == 1 else results, f, indent=1)


if __name__ == "__main__":
    cli.main(main)
