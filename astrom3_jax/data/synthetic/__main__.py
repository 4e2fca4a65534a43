"""CLI: python -m astrom3_jax.data.synthetic --output DIR --preset small --seed N."""

import argparse
import time

from astrom3_jax.data.synthetic import release
from astrom3_jax.data.synthetic.release import generate_release


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True, help="release directory to write")
    parser.add_argument("--preset", default="small", choices=release.PRESETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mislabel-fraction", type=float, default=0.02)
    parser.add_argument("--n-objects", type=int, default=None, help="override the size")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: cores)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate_release(
        args.output, preset=args.preset, seed=args.seed,
        mislabel_fraction=args.mislabel_fraction, n_objects=args.n_objects,
        workers=args.workers,
    )  # fmt: skip
    print(f"wrote {root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
