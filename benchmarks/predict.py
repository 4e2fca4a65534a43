r"""`predict` end to end against the bare compiled model: is parsing the bottleneck?

Writes N synthetic stars (astrom3_jax.data.synthetic) as a user's catalogue
(light curves as .dat files, a LAMOST FITS spectrum for --spectra_fraction
of the rows, the 38 catalogue values), saves a freshly initialised model of
the chosen size as a workdir with recorded normalisation statistics, then
times in alternating rounds:

  end to end  `predict_lib.predict(workdir, catalog, out)`: reading the
              table, parsing and preprocessing every file, loading the
              model, compiling, running it, writing the outputs (what a
              user waits for, start-up included);
  bare model  the same compiled evaluation step (training/evaluation.py)
              over the same objects as ready host batches (preprocessed and
              batched beforehand; compilation excluded).

Each prints samples/s (stars per second of wall time); the summary gives the
median of each over the rounds and their ratio (the target: end to end at
least 80% of the bare model's samples/s).

  python benchmarks/predict.py                      # paper size, 2048 stars
  python benchmarks/predict.py --n_objects 4096 --rounds 2 --spectra_fraction 0.3
  python benchmarks/predict.py --profile 25         # where end to end spends time
  python benchmarks/predict.py --derived            # period etc. measured
  python benchmarks/predict.py --compile_cache      # compiled step read back
  python benchmarks/predict.py --model smoke --n_objects 24 --batch_size 8 \
      --rounds 1                                    # seconds: does it still run?

--model paper is the published architecture
(astrom3_jax.models.paper_model_config, 15.9 M parameters, float32);
smoke is the test-size model. Restarts itself under tcmalloc when it is
installed, as the command lines do (astrom3_jax/cli/host_memory.py).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

sys.path.insert(0, HERE)  # the sibling catalog_preprocessing.py
import catalog_preprocessing  # noqa: E402
import jax  # noqa: E402

from astrom3_jax import api, compile_cache, models, predict_lib  # noqa: E402
from astrom3_jax.cli import host_memory  # noqa: E402
from astrom3_jax.configs import pretrain  # noqa: E402
from astrom3_jax.data import (  # noqa: E402  # noqa: E402
    catalog,
    catalog_tables,
    normalisation,
    pipeline,
    release_io,
    synthetic,
)
from astrom3_jax.prediction import reading  # noqa: E402
from astrom3_jax.training import evaluation  # noqa: E402
from astrom3_jax.training import workdir as workdir_lib  # noqa: E402


def write_catalogue(root: str, out: str, spectra_fraction: float, seed: int = 0):
    """catalog_preprocessing's catalogue of the release, and the release's
    training statistics; returns (path, statistics)."""
    path = catalog_preprocessing.write_catalogue(root, out, spectra_fraction, seed)
    info = os.path.join(release_io.split_folder(root, "full", 42), "info.json")
    return path, normalisation.NormalisationStats.from_info_json(info)


def make_workdir(workdir: str, size: str, stats) -> None:
    """A freshly initialised CLIP model of `size` saved as a workdir, with
    the catalogue's statistics recorded (what train writes)."""
    config = pretrain.get_config(size)
    config.model.dtype = "float32"
    model = models.init_model(config.model, seed=0)
    workdir_lib.save_model_only(workdir, model, config)
    normalisation.write_stats(workdir, stats)


def bare_model(workdir: str, path: str, stats, batch_size: int):
    """run() -> seconds for the compiled evaluation step over every star of
    the catalogue, from ready host batches (compiled before it returns)."""
    model, config = api.load_model(workdir)
    examples = catalog.preprocess(path, stats, progress=False).examples
    source = reading.stored_examples(examples, list(config.model.modalities))
    batches = list(
        pipeline.make_eval_batches(
            source,
            batch_size=batch_size,
            modalities=tuple(config.model.modalities),
            seq_len=config.seq_len,
        )
    )
    predictor = evaluation.Predictor(model, seed=config.seed)

    def run() -> float:
        start = time.perf_counter()
        got = evaluation.predict(
            predictor.step, predictor.parts, batches, predictor.mesh, predictor.key
        )
        assert len(got) == len(source)
        return time.perf_counter() - start

    run()  # compiles
    return run, len(source)


def end_to_end(
    workdir: str, path: str, out: str, batch_size: int, workers, derive=False
):
    start = time.perf_counter()
    res = predict_lib.predict(
        workdir,
        path,
        out,
        batch_size=batch_size,
        num_workers=workers,
        derive_photometry=derive,
        overwrite=True,
        progress=False,
    )
    return time.perf_counter() - start, len(res.ids), res.timings


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("paper", "cpu", "smoke"), default="paper")
    p.add_argument("--n_objects", type=int, default=2048)
    p.add_argument("--spectra_fraction", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="predict's num_workers (default: its own)",
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--profile", type=int, default=0, help="print the N costliest calls of a run"
    )
    p.add_argument(
        "--derived",
        action="store_true",
        help="end to end measures every star's period, amplitude and LKSL "
        "from its light curve (predict --derive_photometry) instead of "
        "reading the catalogue's",
    )
    p.add_argument(
        "--compile_cache",
        action="store_true",
        help="turn on the persistent compilation cache (in a fresh folder) as "
        "the command line does: the bare model's compilation fills it, so end "
        "to end reads the step back, as a user's later predict runs do",
    )
    p.add_argument("--notcmalloc", action="store_true")
    args = p.parse_args(argv)
    # replaces this process when tcmalloc is installed
    malloc = host_memory.reexec_with_tcmalloc(enabled=not args.notcmalloc)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.compile_cache:
            os.environ[compile_cache.ENV] = os.path.join(tmp, "compilation_cache")
            compile_cache.enable()
        root = synthetic.generate_release(
            os.path.join(tmp, "release"), preset="small", n_objects=args.n_objects
        )
        path, stats = write_catalogue(
            str(root), os.path.join(tmp, "catalogue"), args.spectra_fraction
        )
        workdir = os.path.join(tmp, "workdir")
        make_workdir(workdir, args.model, stats)
        n_rows = len(catalog_tables.read_catalog(path))
        print(
            f"{n_rows} stars ({args.spectra_fraction:.0%} with spectra), "
            f"{args.model} model, batch {args.batch_size}, jax {jax.__version__} "
            f"on {jax.device_count()} x {jax.devices()[0].platform}, "
            f"{os.cpu_count()} CPUs, {malloc}, light-curve numbers "
            f"{'derived' if args.derived else 'from the catalogue'}, compilation "
            f"cache {'on' if args.compile_cache else 'off'}; "
            f"set up in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        run_bare, n = bare_model(workdir, path, stats, args.batch_size)
        out = os.path.join(tmp, "out")
        e2e, bare = [], []
        for r in range(args.rounds):
            t_e2e, n_e2e, parts = end_to_end(
                workdir, path, out, args.batch_size, args.workers, args.derived
            )
            assert n_e2e == n
            t_bare = run_bare()
            e2e.append(n / t_e2e)
            bare.append(n / t_bare)
            print(
                f"round {r + 1}: end to end {e2e[-1]:6.1f} samples/s ({t_e2e:.1f} s), "
                f"bare model {bare[-1]:6.1f} samples/s ({t_bare:.1f} s), "
                f"ratio {e2e[-1] / bare[-1]:.0%}\n"
                f"  end to end: model loaded after {parts['load']:.1f} s, model "
                f"ran {parts['model']:.1f} s (compilation included), waited "
                f"{parts['waiting']:.1f} s for preprocessed rows",
                flush=True,
            )
        a, b = statistics.median(e2e), statistics.median(bare)
        print(
            f"summary over {args.rounds} round(s), {n} stars: end to end {a:.1f} "
            f"samples/s, bare model {b:.1f} samples/s, ratio {a / b:.0%}"
        )
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            end_to_end(workdir, path, out, args.batch_size, args.workers)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
