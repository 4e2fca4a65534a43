r"""Upper bound on train-step throughput from the model's unavoidable matmuls.

Times, one at a time, every matrix product the paper-config train step
cannot do without: the photometry feed-forward (forward, input gradient and
weight gradient for all layers), the ProbSparse query projection that the
sparsity measure needs for every row, and the three output projections.
Each product is timed alone (best of several runs), with operands in the
layout the step holds them in, through XLA (jax.lax.dot_general) and through
NumPy's BLAS. Everything else the step does (attention, LayerNorm, GELU,
dropout, the spectra convolutions, Adam) is left out, so

    samples/s <= batch / (sum of these matmul times)

is generous: a real step can only be slower. Compare the result with
benchmarks/train_step.py.

  python benchmarks/matmul_floor.py                 # paper config, batch 64
  python benchmarks/matmul_floor.py --batch_size=512
"""

import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from astrom3_jax.configs import pretrain  # noqa: E402
from astrom3_jax.models import clip  # noqa: E402

flags.DEFINE_string("variant", "paper", "configs/pretrain.py variant")
flags.DEFINE_integer("batch_size", 64, "global batch size")
flags.DEFINE_integer("repeats", 15, "timed runs per product (the best counts)")
FLAGS = flags.FLAGS

# How each product reads its operands, in the layout the step stores them:
# activations (rows, features), weights (in, out).
#   NN: A @ B            forward
#   NT: A @ B^T          input gradient (dY @ W^T)
#   TN: A^T @ B          weight gradient (X^T @ dY), contracting the rows
_DIMS = {"NN": ((1,), (0,)), "NT": ((1,), (1,)), "TN": ((0,), (0,))}


def product_list(config, batch: int) -> list[tuple[str, str, int, int, int, int]]:
    """(group, form, m, k, n, count): the product (m, k) x (k, n), `count` times."""
    m = config.model
    p = m.photometry
    rows = batch * p.seq_len
    d, f = p.d_model, p.d_ff
    out = [
        ("feed-forward fwd", "NN", rows, d, f, p.n_layers),
        ("feed-forward fwd", "NN", rows, f, d, p.n_layers),
        ("feed-forward input grad", "NT", rows, d, f, p.n_layers),
        ("feed-forward input grad", "NT", rows, f, d, p.n_layers),
        ("feed-forward weight grad", "TN", f, rows, d, p.n_layers),
        ("feed-forward weight grad", "TN", d, rows, f, p.n_layers),
        ("attention query projection (fwd)", "NN", rows, d, d, p.n_layers),
    ]
    for name in m.modalities:
        width = clip.build_encoder(m, name, rngs=nnx.Rngs(0)).output_dim
        e = m.embed_dim
        out += [
            ("output projections", "NN", batch, width, e, 1),
            ("output projections", "NT", batch, e, width, 1),
            ("output projections", "TN", width, batch, e, 1),
        ]
    return out


def operands(form: str, m: int, k: int, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 operands stored as the step stores them for `form`."""
    a_shape = (k, m) if form == "TN" else (m, k)
    b_shape = (n, k) if form == "NT" else (k, n)
    return (
        rng.standard_normal(a_shape, dtype=np.float32),
        rng.standard_normal(b_shape, dtype=np.float32),
    )


def best_time(fn: Callable, repeats: int) -> float:
    fn()  # compile / warm caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def xla_runner(form, a, b):
    dims = (_DIMS[form], ((), ()))
    dot = jax.jit(lambda x, y: jax.lax.dot_general(x, y, dims))
    a, b = jax.device_put(a), jax.device_put(b)
    return lambda: dot(a, b).block_until_ready()


def numpy_runner(form, a, b):
    if form == "NN":
        return lambda: a @ b
    if form == "NT":
        return lambda: a @ b.T
    return lambda: a.T @ b


def main(argv):
    del argv
    config = pretrain.get_config(FLAGS.variant)
    batch = FLAGS.batch_size
    rng = np.random.default_rng(0)
    totals: dict[str, dict[str, float]] = {}
    flops_total = 0.0
    print(
        f"{FLAGS.variant} config, batch {batch}, {jax.devices()[0].platform}; "
        f"best of {FLAGS.repeats} runs per product"
    )
    print(
        f"{'product':34s} {'form':4s} {'(m, k) x (k, n)':>24s} {'x':>3s} "
        f"{'XLA GF/s':>9s} {'BLAS GF/s':>9s}"
    )
    for group, form, m, k, n, count in product_list(config, batch):
        a, b = operands(form, m, k, n, rng)
        flops = 2.0 * m * k * n
        t_xla = best_time(xla_runner(form, a, b), FLAGS.repeats)
        t_blas = best_time(numpy_runner(form, a, b), FLAGS.repeats)
        g = totals.setdefault(group, {"flops": 0.0, "xla": 0.0, "blas": 0.0})
        g["flops"] += count * flops
        g["xla"] += count * t_xla
        g["blas"] += count * t_blas
        flops_total += count * flops
        print(
            f"{group:34s} {form:4s} {f'({m}, {k}) x ({k}, {n})':>24s} {count:3d} "
            f"{flops / t_xla / 1e9:9.1f} {flops / t_blas / 1e9:9.1f}"
        )
    print()
    for group, g in totals.items():
        print(
            f"{group:34s} {g['flops'] / 1e9:7.2f} GFLOP  XLA {1e3 * g['xla']:7.1f} ms"
            f"  BLAS {1e3 * g['blas']:7.1f} ms"
        )
    t_xla = sum(g["xla"] for g in totals.values())
    t_blas = sum(g["blas"] for g in totals.values())
    print(
        f"\nunavoidable matmuls: {flops_total / batch / 1e9:.3f} GFLOP/sample, "
        f"{flops_total / 1e9:.1f} GFLOP/step"
    )
    print(
        f"XLA : {1e3 * t_xla:7.1f} ms/step -> at most {batch / t_xla:6.1f} samples/s "
        f"({flops_total / t_xla / 1e9:.1f} GFLOP/s)"
    )
    print(
        f"BLAS: {1e3 * t_blas:7.1f} ms/step -> at most {batch / t_blas:6.1f} samples/s "
        f"({flops_total / t_blas / 1e9:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    app.run(main)
