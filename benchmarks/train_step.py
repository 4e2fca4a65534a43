r"""Train-step throughput and FLOPs of the AstroM3 CLIP model.

Times the full data-parallel train step (forward, global-batch loss,
backward, Adam update) on random inputs of the real shapes, on every device
there is, and prints samples/s (from the median step; the step range and
the mean show noise from other machines) and the model FLOPs per sample
from XLA's cost analysis of the compiled step. It restarts itself under tcmalloc
when that is installed, as the trainer does (astrom3_jax/cli/host_memory.py).

  python benchmarks/train_step.py                       # paper config, 64 + 512
  python benchmarks/train_step.py --batch_sizes=64 --attention=full --dtype=bfloat16
  python benchmarks/train_step.py --notcmalloc   # the system malloc (glibc)
  python benchmarks/train_step.py --variant=smoke --batch_sizes=8 --steps=1 \
      --warmup=0 --notcmalloc                 # seconds: does it still run?
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import step_timing  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from astrom3_jax import models  # noqa: E402
from astrom3_jax.cli import host_memory  # noqa: E402
from astrom3_jax.configs import pretrain  # noqa: E402
from astrom3_jax.training import loop, optim, sharding, tasks  # noqa: E402

flags.DEFINE_string("variant", "paper", "configs/pretrain.py variant")
flags.DEFINE_list("batch_sizes", ["64", "512"], "global batch sizes")
flags.DEFINE_string("attention", None, "override: probsparse | full")
flags.DEFINE_string("dtype", None, "override: float32 | bfloat16")
flags.DEFINE_integer("steps", 0, "timed steps (0: about 20 s worth)")
flags.DEFINE_integer("warmup", 2, "untimed steps after compiling")
flags.DEFINE_bool("tcmalloc", True, "restart under tcmalloc (host_memory.py)")
FLAGS = flags.FLAGS


def random_batch(config, batch_size, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    m = config.model
    lengths = rng.integers(50, m.photometry.seq_len + 1, size=batch_size)
    mask = (np.arange(m.photometry.seq_len)[None] < lengths[:, None]).astype(np.float32)
    shapes = {
        "photometry": (m.photometry.seq_len, m.photometry.in_channels),
        "spectra": (m.spectra.conv_channels[0], m.spectra.length),
        "metadata": (m.metadata.input_dim,),
    }
    batch = {
        k: rng.normal(size=(batch_size, *s)).astype(np.float32)
        for k, s in shapes.items()
        if k in m.modalities
    }
    batch["photometry_mask"] = mask
    batch["label"] = rng.integers(0, 10, size=batch_size).astype(np.int32)
    batch["mask"] = np.ones(batch_size, np.float32)
    return batch


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def bench(config, batch_size: int, steps: int, warmup: int = 2) -> dict:
    """Times the trainer's own step (training/loop.py) on a random batch."""
    mesh = sharding.make_mesh()
    sharding.check_batch_size(batch_size, mesh)
    model = models.init_model(config.model, seed=0)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    task = tasks.for_config(config)
    tx = optim.make_optimizer(config)
    parts = loop.split_model(model, task.trainable(config))
    state = {
        "step": jnp.asarray(0, jnp.int32),
        "params": parts.params,
        "opt_state": tx.init(parts.params),
    }
    with jax.set_mesh(mesh):
        state, frozen, rest = sharding.replicate(
            (state, parts.frozen, parts.rest), mesh
        )
        key = sharding.replicate(jax.random.key(0), mesh)
        batch = sharding.shard_batch(random_batch(config, batch_size), mesh)
        step = loop.make_train_step(parts.train_def, tx, mesh, task)
        lr = jnp.float32(1e-4)
        t0 = time.perf_counter()
        compiled = step.lower(state, frozen, rest, batch, lr, key).compile()
        compile_s = time.perf_counter() - t0
        flops = flops_of(compiled) * mesh.size / batch_size
        for _ in range(warmup):
            state, m = compiled(state, frozen, rest, batch, lr, key)
        jax.block_until_ready(m if warmup else state)
        t_one = time.perf_counter()
        state, m = compiled(state, frozen, rest, batch, lr, key)
        jax.block_until_ready(m)
        t_one = time.perf_counter() - t_one
        steps = steps or max(3, int(20 / max(t_one, 1e-3)))
        times = []
        for _ in range(steps):  # one step in flight, as in the trainer
            t0 = time.perf_counter()
            state, m = compiled(state, frozen, rest, batch, lr, key)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
    return {
        "batch": batch_size,
        "devices": mesh.size,
        "params": int(n_params),
        **step_timing.summarize(times, batch_size),
        "gflops_per_sample": flops / 1e9,
        "compile_s": compile_s,
        "loss": float(m["loss"]),
    }


def main(argv):
    del argv
    # replaces this process when tcmalloc is installed
    malloc = host_memory.reexec_with_tcmalloc(enabled=FLAGS.tcmalloc)
    config = pretrain.get_config(FLAGS.variant)
    if FLAGS.attention:
        config.model.photometry.attention = FLAGS.attention
    if FLAGS.dtype:
        config.model.dtype = FLAGS.dtype
    dev = jax.devices()[0]
    print(
        f"{jax.device_count()} x {dev.platform} ({dev.device_kind}); "
        f"variant={FLAGS.variant} attention={config.model.photometry.attention} "
        f"dtype={config.model.dtype}; {malloc}"
    )
    for b in FLAGS.batch_sizes:
        r = bench(config, int(b), FLAGS.steps, FLAGS.warmup)
        print(
            f"batch {r['batch']:4d}: {step_timing.describe(r)}, train-step "
            f"FLOPs/sample {r['gflops_per_sample']:.3f} G, params {r['params']:,}, "
            f"compile {r['compile_s']:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
