r"""Start-up of a process that loads a model: `load_model` then the first
`embed` of 4 light curves, in a first and a second process.

Writes a workdir holding the paper-size CLIP model (random weights, as a
training run would save them), then starts fresh interpreters that load it
and embed: twice with the persistent compilation cache off, then twice with
a new, empty cache folder. The first cached process fills the folder; the
second reads its programs back. Prints each process's seconds and the ratio
second/first.

  python benchmarks/fast_start.py                 # paper model, 2 rounds
  python benchmarks/fast_start.py --model small --rounds 1   # does it run?
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PROBE = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import astrom3_jax
t1 = time.perf_counter()
model, config = astrom3_jax.load_model(sys.argv[1])
t2 = time.perf_counter()
m = config.model.photometry
r = np.random.default_rng(0)
emb = model.embed(
    photometry=r.normal(size=(4, m.seq_len, m.in_channels)).astype(np.float32),
    photometry_mask=np.ones((4, m.seq_len), np.float32),
)
np.asarray(emb["photometry"])
t3 = time.perf_counter()
print(f"RESULT {t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f}")
"""


def make_workdir(path: str, model: str) -> None:
    """A workdir holding a randomly initialised CLIP model of `model` size."""
    sys.path.insert(0, ROOT)
    import ml_collections

    from astrom3_jax import models
    from astrom3_jax.training import workdir as workdir_lib

    model_config = (
        models.paper_model_config() if model == "paper" else models.small_model_config()
    )
    config = ml_collections.ConfigDict({"model": model_config, "seed": 0})
    net = models.init_model(model_config, seed=0)
    workdir_lib.save_model_only(path, net, config)


def probe(workdir: str, cache: str) -> dict:
    """One fresh interpreter: (import, load_model, first embed) seconds."""
    env = {**os.environ, "ASTROM3_COMPILATION_CACHE": cache, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, workdir],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][-1]
    imp, load, embed = map(float, line.split()[1:])
    return {"import": imp, "load_model": load, "first_embed": embed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("paper", "small"), default="paper")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = os.path.join(tmp, "run")
        make_workdir(workdir, args.model)
        rows = {"off 1st": [], "off 2nd": [], "cache 1st": [], "cache 2nd": []}
        for r in range(args.rounds):
            rows["off 1st"].append(probe(workdir, "off"))
            rows["off 2nd"].append(probe(workdir, "off"))
            cache = os.path.join(tmp, f"cache{r}")
            rows["cache 1st"].append(probe(workdir, cache))
            rows["cache 2nd"].append(probe(workdir, cache))
    print(f"{args.model} model, {args.rounds} round(s), medians in seconds")
    print(
        f"{'process':<10} {'import':>7} {'load_model':>11} {'1st embed':>10} {'sum':>7}"
    )
    med = {}
    for name, got in rows.items():
        m = {k: statistics.median(g[k] for g in got) for k in got[0]}
        med[name] = m["load_model"] + m["first_embed"]
        print(
            f"{name:<10} {m['import']:7.2f} {m['load_model']:11.2f} "
            f"{m['first_embed']:10.2f} {med[name]:7.2f}"
        )
    ratio = med["cache 2nd"] / med["cache 1st"]
    print(f"load_model + 1st embed, 2nd process / 1st (cache on): {ratio:.2f}")
    print(json.dumps({"model": args.model, "seconds": med, "ratio": ratio}))


if __name__ == "__main__":
    main()
