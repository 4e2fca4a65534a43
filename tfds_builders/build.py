r"""Prepares an astrom3 TFDS config from Python (the `tfds` CLI needs TensorFlow).

    python -m tfds_builders.build --config full_42 [--manual_dir DIR] \
        [--data_dir DIR] [--skip_bad] [--num_workers N]

Without --manual_dir the raw release is downloaded from the Hugging Face Hub.
Synthetic configs (synthetic_small, synthetic_full) generate their raw files.
"""

from __future__ import annotations

import argparse

from astrom3_jax.data import datasets

# Kept for callers of the old names.
prepare = datasets.prepare
report = datasets.report


def main(argv=None):
    names = datasets.config_names()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="full_42", choices=names)
    p.add_argument(
        "--data_dir", default=None, help="TFDS data dir (~/tensorflow_datasets)"
    )
    p.add_argument("--manual_dir", default=None, help="local copy of the Hub release")
    p.add_argument("--skip_bad", action="store_true", help="skip and count bad objects")
    p.add_argument("--num_workers", type=int, default=None)
    args = p.parse_args(argv)
    builder = prepare(
        args.config,
        args.data_dir,
        args.manual_dir,
        skip_bad=args.skip_bad,
        num_workers=args.num_workers,
    )
    rep = report(builder)
    print(f"prepared {builder.info.full_name} in {builder.data_dir}")
    print(f"examples per split: {rep['written']}; skipped: {rep['skipped']}")


if __name__ == "__main__":
    main()
