r"""Catalogue preprocessing throughput: objects/s from raw files to features.

Generates a synthetic release (astrom3_jax.data.synthetic), writes it as a
user's catalogue (light curves extracted to .dat files, spectra where the
release keeps them, every row complete, or none with --without_spectra),
then times
`astrom3_jax.data.catalog.preprocess` (table reading excluded, reading and
parsing the raw files included) in this process and with worker processes:

  python benchmarks/catalog_preprocessing.py                  # 600 objects
  python benchmarks/catalog_preprocessing.py --n_objects 2000 --workers 0 2 4
  python benchmarks/catalog_preprocessing.py --without_spectra  # no spectra

Each setting runs --repeats times; the best time is reported (the machine
may be shared). Worker runs include the pool's start-up (spawned processes
import numpy and astropy, about a second each).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
import zipfile

import numpy as np

from astrom3_jax.data import (
    catalog,
    catalog_tables,
    normalisation,
    release_io,
    schema,
    synthetic,
)


def write_catalogue(
    root: str, out: str, spectra_fraction: float = 1.0, seed: int = 0
) -> str:
    """A catalogue of every object of the synthetic release `root`, light
    curves extracted to out/lightcurves/, a spectrum for a random
    `spectra_fraction` of the stars; returns the table's path."""
    folder = release_io.split_folder(root, "full", 42)
    rows = [
        r
        for stem in ("train", "val", "test")
        for r in release_io.read_split_csv(
            os.path.join(folder, f"{stem}.csv"), numeric_cols=()
        )
    ]
    lc_dir = os.path.join(out, "lightcurves")
    os.makedirs(lc_dir, exist_ok=True)
    with zipfile.ZipFile(os.path.join(root, "photometry.zip")) as z:
        for r in rows:
            with open(os.path.join(lc_dir, f"{r['name']}.dat"), "wb") as f:
                f.write(z.read(release_io.dat_member(r["name"])))
    with_spectrum = np.random.default_rng(seed).uniform(size=len(rows))
    path = os.path.join(out, "catalog.csv")
    cols = ["id", "name", "label", "lightcurve", "spectrum", *schema.ALL_COLS]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r, u in zip(rows, with_spectrum, strict=True):
            spec = release_io.spectrum_path(root, r["target"], r["spec_filename"])
            w.writerow(
                {
                    "id": r["id"],
                    "name": r["name"],
                    "label": r["target"],
                    "lightcurve": f"lightcurves/{r['name']}.dat",
                    "spectrum": spec if u < spectra_fraction else "",
                    **{c: r[c] for c in schema.ALL_COLS},
                }
            )
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n_objects", type=int, default=600)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--without_spectra",
        action="store_true",
        help="rows without a spectrum (most of a real user's stars)",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.generate_release(
            os.path.join(tmp, "release"), preset="small", n_objects=args.n_objects
        )
        path = write_catalogue(
            str(root),
            os.path.join(tmp, "catalogue"),
            0.0 if args.without_spectra else 1.0,
        )
        stats = normalisation.NormalisationStats.from_info_json(
            os.path.join(release_io.split_folder(root, "full", 42), "info.json")
        )
        cat = catalog_tables.read_catalog(path)
        print(f"{len(cat)} objects, {os.cpu_count()} CPUs")
        for workers in args.workers:
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = catalog.preprocess(
                    cat, stats, num_workers=workers, progress=False
                )
                best = min(best, time.perf_counter() - start)
            assert len(out.examples) == len(cat)
            print(f"workers={workers}: {best:.2f} s, {len(cat) / best:.0f} objects/s")


if __name__ == "__main__":
    main()
