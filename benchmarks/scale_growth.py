r"""How wall time and peak memory grow with the number of objects.

Runs each step at several sizes (by default N, 8N and 64N with N = 2000)
and reports, per step and size: wall seconds, seconds per object and the
peak resident memory. Every measured step runs in a fresh Python process,
so that one step's memory is not another's:

  build_release  the synthetic config `astrom3/synthetic_small` built by the
                 TFDS builder from a synthetic release of the size
                 (generated beforehand, the `generate` row, into the place
                 where the builder looks for it): the release format;
  build_catalog  the `catalog` config built from a user's table of the same
                 stars, mostly light-curve-only: a light curve for every
                 row, a LAMOST spectrum for --spectra_fraction of them and
                 the catalogue values for --values_fraction;
  epoch_cache    one pre-training epoch of the input pipeline over the
  epoch_stream   built train split (pipeline.make_train_loader, batch
                 --batch_size, num_epochs=1): with cache=True (the configs'
                 default: the split decoded into memory first) and with
                 cache=False (read from the array_record files). Only the
                 input pipeline (reading, decoding, cropping, batching),
                 not the model step;
  export         export_embeddings.export of every split of the built data
                 set;
  predict        predict_lib.predict on the catalogue (every row).

export and predict use a freshly initialised (random) CLIP model of
--model size (`smoke` by default: the cost is then the data path's, not
the network's), saved once as a workdir with the release's statistics.

Memory is `ru_maxrss` of the step's process as os.wait4 returns it: the
peak of the largest single process among it and the worker processes it
waited for (not their sum). `tree MiB` is the peak of the sum over the
process and its children, sampled every 0.1 s (psutil; short peaks can be
missed). `imports` is a process that imports what the steps import and
exits: the fixed part of every row's memory.

Growth between consecutive sizes: the exponent b of time ~ a * n^b
(b = 1: linear) and the ratio of peak memory. The targets checked: time
at most linear (b <= 1) for the two builds and predict, and peak memory
at the larger size at most 1.6 times the smaller one's for the builds,
export and predict.

  python benchmarks/scale_growth.py --out /tmp/scale.json        # 2000, 16000, 128000
  python benchmarks/scale_growth.py --sizes 2000 16000 --out /tmp/scale.json
  python benchmarks/scale_growth.py --sizes 2000 16000 \
      --steps build_release epoch_cache --work /tmp/scale    # keeps the files
  python benchmarks/scale_growth.py --sizes 40 80 --model smoke  # seconds

Steps run size after size back to back (all sizes of one step, then the
next step), so that a machine shared with other work disturbs the pairs
compared as little as it can. --work keeps the releases, catalogues and
built data sets (reused by a rerun: a step whose input is missing builds
it, unmeasured; a release or catalogue already there is reused, not
remade or timed again); without it everything goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

STEPS = (
    "build_release",
    "build_catalog",
    "epoch_cache",
    "epoch_stream",
    "export",
    "predict",
)
# The set-up rows (measured, not targets).
SETUP = ("imports", "generate", "write_catalogue")
CONFIG = "synthetic_small"
SEED = 0
TIME_TARGET = ("build_release", "build_catalog", "predict")  # exponent <= 1
MEMORY_TARGET = ("build_release", "build_catalog", "export", "predict")  # <= 1.6x
MEMORY_RATIO_LIMIT = 1.6


# ----------------------------------------------------------------- layout
def _paths(work: str, n: int) -> dict:
    from astrom3_jax.data import synthetic

    size = os.path.join(work, f"n{n}")
    data_dir = os.path.join(size, "tfds")
    return {
        "size": size,
        "data_dir": data_dir,
        # where the synthetic config's builder looks for its raw release
        "release": os.path.join(
            data_dir,
            "downloads",
            f"synthetic_small_seed{SEED}_v{synthetic.GENERATOR_VERSION}",
        ),
        "catalogue": os.path.join(size, "catalogue"),
        "catalog_data_dir": os.path.join(size, "tfds_catalog"),
        "workdir": os.path.join(work, "workdir"),
        "out": os.path.join(size, "out"),
    }


# ------------------------------------------------------------ child steps
def _generate(p, n, args) -> int:
    from astrom3_jax.data import synthetic

    shutil.rmtree(p["release"], ignore_errors=True)
    synthetic.generate_release(
        p["release"], preset="small", seed=SEED, n_objects=n
    )  # complete objects, plus the release's unseen ones
    with open(os.path.join(p["release"], ".complete"), "w") as f:
        f.write("ok\n")  # what the builder writes after generating
    return len(_release_rows(p["release"], with_unseen=True))


def _release_rows(root: str, with_unseen=False) -> list[dict]:
    from astrom3_jax.data import release_io

    folder = release_io.split_folder(root, "full", 42)
    stems = ("train", "val", "test", *(("unseen",) if with_unseen else ()))
    return [
        r
        for stem in stems
        if os.path.exists(os.path.join(folder, f"{stem}.csv"))
        for r in release_io.read_split_csv(
            os.path.join(folder, f"{stem}.csv"), numeric_cols=()
        )
    ]


def _write_catalogue(p, n, args) -> int:
    """A user's table of the release's train/val/test stars: a light curve
    (.dat) for each, a spectrum for spectra_fraction of them, the 38
    catalogue values for values_fraction (blank otherwise)."""
    import csv
    import zipfile

    import numpy as np

    from astrom3_jax.data import release_io, schema

    rows = _release_rows(p["release"])
    out = p["catalogue"]
    shutil.rmtree(out, ignore_errors=True)
    lc_dir = os.path.join(out, "lightcurves")
    os.makedirs(lc_dir)
    with zipfile.ZipFile(os.path.join(p["release"], "photometry.zip")) as z:
        for r in rows:
            with open(os.path.join(lc_dir, f"{r['name']}.dat"), "wb") as f:
                f.write(z.read(release_io.dat_member(r["name"])))
    rng = np.random.default_rng(SEED)
    spec = rng.uniform(size=len(rows)) < args.spectra_fraction
    values = rng.uniform(size=len(rows)) < args.values_fraction
    cols = ["id", "name", "label", "lightcurve", "spectrum", *schema.ALL_COLS]
    with open(os.path.join(out, "catalog.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r, s, v in zip(rows, spec, values, strict=True):
            path = release_io.spectrum_path(
                p["release"], r["target"], r["spec_filename"]
            )
            w.writerow(
                {
                    "id": r["id"],
                    "name": r["name"],
                    "label": r["target"],
                    "lightcurve": f"lightcurves/{r['name']}.dat",
                    "spectrum": os.path.abspath(path) if s else "",
                    **{c: r[c] if v else "" for c in schema.ALL_COLS},
                }
            )
    return len(rows)


def _make_workdir(p, args) -> None:
    from astrom3_jax import models
    from astrom3_jax.configs import pretrain
    from astrom3_jax.data import normalisation, release_io
    from astrom3_jax.training import workdir as workdir_lib

    info = os.path.join(release_io.split_folder(p["release"], "full", 42), "info.json")
    config = pretrain.get_config(args.model)
    config.model.dtype = "float32"
    model = models.init_model(config.model, seed=0)
    workdir_lib.save_model_only(p["workdir"], model, config)
    normalisation.write_stats(
        p["workdir"], normalisation.NormalisationStats.from_info_json(info)
    )


def _build_release(p, n, args) -> int:
    from astrom3_jax.data import datasets

    shutil.rmtree(os.path.join(p["data_dir"], "astrom3"), ignore_errors=True)
    b = datasets.prepare(CONFIG, p["data_dir"])
    return sum(datasets.report(b)["written"].values())


def _build_catalog(p, n, args) -> int:
    from astrom3_jax.data import datasets

    shutil.rmtree(p["catalog_data_dir"], ignore_errors=True)
    b = datasets.prepare("catalog", p["catalog_data_dir"], p["catalogue"])
    return sum(datasets.report(b)["written"].values())


def _epoch(cache: bool):
    def run(p, n, args) -> int:
        from astrom3_jax.data import pipeline

        source = pipeline.open_tfds_source(
            "train", config=CONFIG, data_dir=p["data_dir"]
        )
        it = pipeline.make_train_loader(
            source, batch_size=args.batch_size, seed=0, num_epochs=1, cache=cache
        )
        rows = 0
        for batch in it:
            rows += len(batch["label"])
        assert rows == len(source) // args.batch_size * args.batch_size, rows
        return rows

    return run


def _export(p, n, args) -> int:
    import numpy as np

    from astrom3_jax import export_embeddings
    from astrom3_jax.data import datasets

    splits = datasets.split_names(CONFIG, p["data_dir"])
    out = os.path.join(p["out"], "export")
    export_embeddings.export(
        p["workdir"], CONFIG, splits, out, data_dir=p["data_dir"],
        batch_size=args.batch_size, overwrite=True, progress=False,
    )  # fmt: skip
    return sum(len(np.load(os.path.join(out, s, "fused.npy"))) for s in splits)


def _predict(p, n, args) -> int:
    from astrom3_jax import predict_lib

    res = predict_lib.predict(
        p["workdir"], os.path.join(p["catalogue"], "catalog.csv"),
        os.path.join(p["out"], "predict"), batch_size=args.batch_size,
        overwrite=True, progress=False,
    )  # fmt: skip
    return len(res.ids)


def _imports(p, n, args) -> int:
    import jax  # noqa: F401
    import tensorflow_datasets  # noqa: F401

    from astrom3_jax import export_embeddings, predict_lib  # noqa: F401
    from astrom3_jax.data import datasets, pipeline  # noqa: F401

    return 0


CHILD = {
    "imports": _imports,
    "generate": _generate,
    "write_catalogue": _write_catalogue,
    "build_release": _build_release,
    "build_catalog": _build_catalog,
    "epoch_cache": _epoch(True),
    "epoch_stream": _epoch(False),
    "export": _export,
    "predict": _predict,
}
# What a step reads, made (unmeasured) when missing.
NEEDS = {
    "write_catalogue": ("generate",),
    "build_release": ("generate",),
    "build_catalog": ("write_catalogue",),
    "epoch_cache": ("build_release",),
    "epoch_stream": ("build_release",),
    "export": ("build_release",),
    "predict": ("write_catalogue",),
}


def _done_marker(p, step) -> str:
    return os.path.join(p["size"], f".{step}.done")


def child_main(args) -> None:
    p = _paths(args.work, args.size)
    os.makedirs(p["size"], exist_ok=True)
    if args.child in ("export", "predict") and not os.path.exists(
        os.path.join(p["workdir"], "done")
    ):
        raise SystemExit("make the workdir first (--child workdir)")
    if args.child == "workdir":
        _make_workdir(p, args)
        open(os.path.join(p["workdir"], "done"), "w").close()
        print("RESULT " + json.dumps({"objects": 0, "inner_s": 0.0}), flush=True)
        return
    start = time.perf_counter()
    n_objects = CHILD[args.child](p, args.size, args)
    wall = time.perf_counter() - start
    open(_done_marker(p, args.child), "w").close()
    print("RESULT " + json.dumps({"objects": n_objects, "inner_s": wall}), flush=True)


# ---------------------------------------------------------------- parent
def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_child(step: str, n: int, args, log) -> dict:
    """Runs one step in a fresh process: its wall time, peak RSS, output."""
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child", step, "--size", str(n),
        "--work", args.work, "--model", args.model, "--batch_size",
        str(args.batch_size), "--spectra_fraction", str(args.spectra_fraction),
        "--values_fraction", str(args.values_fraction),
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        text=True,
    )  # fmt: skip
    peak_tree = [0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.1):
            peak_tree[0] = max(peak_tree[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = []

    def drain():
        for line in proc.stdout:
            output.append(line)
            log.write(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "".join(output[-40:])
        raise RuntimeError(f"{step} at {n} exited {proc.returncode}:\n{tail}")
    result = next(
        json.loads(line[len("RESULT ") :])
        for line in reversed(output)
        if line.startswith("RESULT ")
    )
    return {
        "wall_s": wall,
        "inner_s": result["inner_s"],
        "objects": result["objects"],
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "peak_tree_rss_mib": peak_tree[0] / 2**20,
    }


def _ensure(step: str, n: int, args, log) -> None:
    """Makes the inputs of `step` at size n when missing (unmeasured)."""
    p = _paths(args.work, n)
    for need in NEEDS.get(step, ()):
        if not os.path.exists(_done_marker(p, need)):
            _ensure(need, n, args, log)
            print(f"  (making {need} at {n} for {step})", flush=True)
            run_child(need, n, args, log)


def growth(rows: list[dict]) -> list[dict]:
    """Per step, between consecutive sizes: time exponent, memory ratio."""
    out = []
    steps = []
    for r in rows:
        if r["step"] not in steps:
            steps.append(r["step"])
    for step in steps:
        mine = sorted((r for r in rows if r["step"] == step), key=lambda r: r["size"])
        for a, b in zip(mine, mine[1:], strict=False):
            if a["objects"] <= 0 or b["objects"] <= a["objects"]:
                continue
            ratio_n = b["objects"] / a["objects"]
            entry = {
                "step": step,
                "from": a["size"],
                "to": b["size"],
                "objects_ratio": ratio_n,
                "time_exponent": math.log(b["wall_s"] / a["wall_s"])
                / math.log(ratio_n),
                "memory_ratio": b["peak_rss_mib"] / a["peak_rss_mib"],
                "tree_memory_ratio": (
                    b["peak_tree_rss_mib"] / a["peak_tree_rss_mib"]
                    if a["peak_tree_rss_mib"]
                    else None
                ),
            }
            if step in TIME_TARGET:
                entry["time_target_met"] = entry["time_exponent"] <= 1.0
            if step in MEMORY_TARGET:
                entry["memory_target_met"] = entry["memory_ratio"] <= MEMORY_RATIO_LIMIT
            out.append(entry)
    return out


def _machine() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def print_tables(rows, grown) -> None:
    print(
        f"\n{'size':>7} {'step':<16} {'objects':>8} {'wall s':>9} "
        f"{'s/object':>10} {'peak RSS MiB':>13} {'tree MiB':>9}"
    )
    for r in rows:
        per = r["wall_s"] / r["objects"] if r["objects"] else float("nan")
        print(
            f"{r['size']:>7} {r['step']:<16} {r['objects']:>8} {r['wall_s']:>9.1f} "
            f"{per:>10.5f} {r['peak_rss_mib']:>13.0f} {r['peak_tree_rss_mib']:>9.0f}"
        )
    if grown:
        print(
            f"\n{'step':<16} {'sizes':>15} {'time exponent b':>16} "
            f"{'memory ratio':>13} {'tree ratio':>11}  targets"
        )
    for g in grown:
        targets = []
        if "time_target_met" in g:
            targets.append(f"time {'met' if g['time_target_met'] else 'MISSED'}")
        if "memory_target_met" in g:
            targets.append(f"memory {'met' if g['memory_target_met'] else 'MISSED'}")
        tree = g["tree_memory_ratio"]
        print(
            f"{g['step']:<16} {g['from']:>7}->{g['to']:<7} {g['time_exponent']:>16.2f} "
            f"{g['memory_ratio']:>13.2f} {tree if tree is None else f'{tree:.2f}':>11}"
            f"  {', '.join(targets)}"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 16000, 128000])
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    p.add_argument("--model", choices=("paper", "cpu", "smoke"), default="smoke")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--spectra_fraction", type=float, default=0.1)
    p.add_argument("--values_fraction", type=float, default=0.3)
    p.add_argument("--work", default=None, help="keep files here (default: temp)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--log", default=None, help="the steps' output (default: none)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)
    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="scale_growth_")
        args.work = tmp
    args.work = os.path.abspath(args.work)
    log = open(args.log, "a") if args.log else open(os.devnull, "w")
    machine = _machine()
    print(
        f"sizes {args.sizes}, steps {args.steps}, {args.model} model (random init), "
        f"batch {args.batch_size}; {machine['cpus']} x {machine['cpu_model']}",
        flush=True,
    )
    rows = []

    def record(step, n):
        r = {"step": step, "size": n, **run_child(step, n, args, log)}
        rows.append(r)
        print(
            f"  {step} at {n}: {r['objects']} objects, {r['wall_s']:.1f} s, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB (tree {r['peak_tree_rss_mib']:.0f})",
            flush=True,
        )

    try:
        record("imports", 0)
        # Set-up, measured too: the releases, then the catalogues.
        for step in ("generate", "write_catalogue"):
            for n in args.sizes:
                if step == "write_catalogue" and not {
                    "build_catalog",
                    "predict",
                } & set(args.steps):
                    continue
                if os.path.exists(_done_marker(_paths(args.work, n), step)):
                    print(f"  {step} at {n}: reused from {args.work}", flush=True)
                    continue
                record(step, n)
        workdir = _paths(args.work, args.sizes[0])["workdir"]
        if {"export", "predict"} & set(args.steps) and not os.path.exists(
            os.path.join(workdir, "done")
        ):
            run_child("workdir", args.sizes[0], args, log)
        for step in args.steps:
            for n in args.sizes:
                _ensure(step, n, args, log)
                record(step, n)
    finally:
        log.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    grown = growth([r for r in rows if r["step"] != "imports"])
    print_tables(rows, grown)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "machine": machine,
                    "settings": {
                        k: getattr(args, k)
                        for k in (
                            "sizes",
                            "steps",
                            "model",
                            "batch_size",
                            "spectra_fraction",
                            "values_fraction",
                        )
                    },  # fmt: skip
                    "rows": rows,
                    "growth": grown,
                },
                f,
                indent=2,
            )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
