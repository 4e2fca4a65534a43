r"""Inference throughput: our compiled `embed` and the export step against the
PyTorch forward.

Both run the paper-size CLIP model (astrom3_jax.models.paper_model_config,
15,869,827 parameters) in eval mode, float32, on random inputs of the real
shapes: `AstroM3.embed` (input checks, canonical padding, then the program
compiled once for the input shape) here, and the PyTorch transcription of
benchmarks/torch_train_step.py (eval mode, torch.no_grad) in a separate
interpreter that has torch. The two alternate in rounds, one process
computing at a time, so drifting load from other jobs on the machine hits
both alike; each round reports samples/s from its median step, and the
summary gives the median of the per-round figures and ratios.

PyTorch is not a project dependency; install it in its own venv:

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch numpy safetensors
  python benchmarks/inference.py                       # batch 64 and 512, 3 rounds
  python benchmarks/inference.py --batch_sizes 64 --rounds 5 --steps 10
  python benchmarks/inference.py --torch_python ''     # JAX only
  python benchmarks/inference.py --threads 1   # both sides on one CPU
  python benchmarks/inference.py --model small --batch_sizes 8 --rounds 1 \
      --steps 1 --torch_python '' --notcmalloc   # seconds: does it still run?

--threads N pins both processes to the first N CPUs (and sets PyTorch's
thread count to N). On a 2-core machine shared with other jobs, PyTorch's
OpenMP threads wait on each other at every op barrier whenever one of them
is descheduled, which can make its 2-thread forward many times slower
than its 1-thread one; compare at --threads 1 as well when the load
average is above the core count.

Both sides restart themselves under tcmalloc when it is installed
(astrom3_jax/cli/host_memory.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import step_timing  # noqa: E402
from flax import nnx  # noqa: E402

from astrom3_jax import models  # noqa: E402
from astrom3_jax.cli import host_memory  # noqa: E402

AUX = 6  # auxiliary channels repeated on every light-curve row


def random_inputs(model_config, batch_size: int, seed: int = 0) -> dict:
    """Inputs of the real shapes, padded the way the data pipeline pads."""
    rng = np.random.default_rng(seed)
    p = model_config.photometry
    lengths = rng.integers(50, p.seq_len + 1, size=batch_size)
    mask = np.arange(p.seq_len)[None] < lengths[:, None]
    photometry = rng.normal(size=(batch_size, p.seq_len, p.in_channels))
    photometry[..., : p.in_channels - AUX] *= mask[..., None]
    photometry[..., p.in_channels - AUX :] = photometry[:, :1, p.in_channels - AUX :]
    s, m = model_config.spectra, model_config.metadata
    return {
        "photometry": photometry.astype(np.float32),
        "photometry_mask": mask.astype(np.float32),
        "spectra": rng.normal(size=(batch_size, 3, s.length)).astype(np.float32),
        "metadata": rng.normal(size=(batch_size, m.input_dim)).astype(np.float32),
    }


def build_model(size: str = "paper"):
    """The CLIP model in eval mode: 'paper' size, or 'small' (seconds; tests)."""
    config = models.paper_model_config()
    if size == "small":
        config = models.small_model_config()
    config.dtype = "float32"
    model = models.init_model(config, seed=0)  # one compilation for all params
    model.eval()
    return model, config


def time_embed(model, batch: dict, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(model.embed(**batch))
        times.append(time.perf_counter() - t0)
    return times


def export_step(model, config):
    """The step `python -m astrom3_jax.export_embeddings` runs per batch:
    the one evaluation path's compiled predict step (training/evaluation.py)."""
    from astrom3_jax.training import evaluation, sharding

    predictor = evaluation.Predictor(model, seed=0)

    def run(batch: dict):
        full = dict(batch, mask=np.ones(len(batch["metadata"]), np.float32))
        with jax.set_mesh(predictor.mesh):
            device = sharding.shard_batch(full, predictor.mesh)
            return predictor.step(*predictor.parts, device, predictor.key)

    return run


def time_export(run, batch: dict, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(run(batch))
        times.append(time.perf_counter() - t0)
    return times


def time_torch(python: str, batch_size: int, steps: int, threads) -> list[float]:
    cmd = [
        python,
        os.path.join(HERE, "torch_train_step.py"),
        "--forward",
        "--json",
        "--batch_sizes",
        str(batch_size),
        "--steps",
        str(steps),
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    for line in done.stdout.splitlines():
        record = json.loads(line)
        if "header" in record:
            time_torch.header = record["header"]
        else:
            return record["step_s"]
    raise RuntimeError(f"no timings in the output of {' '.join(cmd)}")


def rate(times: list[float], batch_size: int) -> float:
    return step_timing.summarize(times, batch_size)["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="timed steps per side and round (0: 8 at batch <= 64, else 3)",
    )
    parser.add_argument("--torch_python", default="/tmp/torchvenv/bin/python")
    parser.add_argument("--notcmalloc", action="store_true")
    parser.add_argument(
        "--model", choices=["paper", "small"], default="paper", help="small: tests"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="pin both sides to N CPUs (0: all)"
    )
    args = parser.parse_args()
    # replaces this process when tcmalloc is installed
    malloc = host_memory.reexec_with_tcmalloc(enabled=not args.notcmalloc)
    if args.threads:  # before JAX starts its CPU client; the torch child inherits
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
    use_torch = bool(args.torch_python) and os.path.exists(args.torch_python)
    if args.torch_python and not use_torch:
        print(f"{args.torch_python} not found: timing JAX only (see --help)")

    model, config = build_model(args.model)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(
        f"jax {jax.__version__} on {jax.device_count()} x "
        f"{jax.devices()[0].platform}, {len(os.sched_getaffinity(0))} CPUs; "
        f"{args.model} model {n_params:,} params, eval, float32; {malloc}",
        flush=True,
    )
    batches = {b: random_inputs(config, b) for b in args.batch_sizes}
    export = export_step(model, config)
    for b, batch in batches.items():  # compile every shape before timing
        t0 = time.perf_counter()
        jax.block_until_ready(model.embed(**batch))
        jax.block_until_ready(export(batch))
        print(
            f"batch {b}: embed and export compiled in {time.perf_counter() - t0:.1f} s"
        )

    per_round = {b: {"jax": [], "export": [], "torch": []} for b in batches}
    for r in range(args.rounds):
        for b, batch in batches.items():
            steps = args.steps or (8 if b <= 64 else 3)
            jax_times = time_embed(model, batch, steps)
            export_times = time_export(export, batch, steps)
            line = f"round {r + 1} batch {b:4d}: JAX embed {rate(jax_times, b):6.1f}"
            line += f", export step {rate(export_times, b):6.1f}"
            per_round[b]["jax"].append(rate(jax_times, b))
            per_round[b]["export"].append(rate(export_times, b))
            if use_torch:
                torch_times = time_torch(args.torch_python, b, steps, args.threads)
                per_round[b]["torch"].append(rate(torch_times, b))
                ratio = per_round[b]["jax"][-1] / per_round[b]["torch"][-1]
                line += (
                    f", PyTorch forward {rate(torch_times, b):6.1f} samples/s "
                    f"(median step); JAX/PyTorch {ratio:.2f}"
                )
            print(line, flush=True)
    if use_torch:
        print(f"PyTorch side: {time_torch.header}")
    print("summary (median over rounds of each round's median-step samples/s):")
    for b, got in per_round.items():
        jax_rate = statistics.median(got["jax"])
        line = f"  batch {b:4d}: JAX embed {jax_rate:.1f}"
        line += f", export step {statistics.median(got['export']):.1f}"
        if got["torch"]:
            torch_rate = statistics.median(got["torch"])
            ratios = [j / t for j, t in zip(got["jax"], got["torch"], strict=True)]
            line += (
                f", PyTorch {torch_rate:.1f} samples/s; JAX/PyTorch per round "
                + " ".join(f"{x:.2f}" for x in ratios)
                + f" (median {statistics.median(ratios):.2f})"
            )
        print(line)


if __name__ == "__main__":
    main()
