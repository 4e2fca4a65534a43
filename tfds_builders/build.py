r"""Prepares an astrom3 TFDS config from Python (the `tfds` CLI needs TensorFlow).

    python -m tfds_builders.build --config full_42 [--manual_dir DIR] \
        [--data_dir DIR] [--skip_bad [--max_bad_fraction F]] [--overwrite] \
        [--num_workers N] [--beam_pipeline_options OPTIONS]

Without --manual_dir the raw release is downloaded from the Hugging Face Hub.
Synthetic configs (synthetic_<preset> and synthetic_<preset>_<subset>_<seed>)
generate their raw files. The `catalog` config reads a table of your own
stars, --manual_dir DIR holding DIR/catalog.csv (or .ecsv, .fits, .vot):

    python -m tfds_builders.build --config catalog --manual_dir examples/my_stars

--beam_pipeline_options builds with Apache Beam (pip install
'astrom3-jax[beam]') instead of the process pool, with TFDS's syntax:
"runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
here, or a Dataflow/Flink/Spark runner's options (README, "Builds past one
machine").
"""

from __future__ import annotations

import argparse

from astrom3_jax.data import datasets
from astrom3_jax.data.astrom3_tfds.astrom3_dataset_builder import (
    DEFAULT_MAX_BAD_FRACTION,
)

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
    p.add_argument(
        "--max_bad_fraction",
        type=float,
        default=DEFAULT_MAX_BAD_FRACTION,
        help="with --skip_bad, fail when more than this fraction of a split is bad "
        f"(default {DEFAULT_MAX_BAD_FRACTION})",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild even if the data set is already prepared in data_dir",
    )
    p.add_argument(
        "--num_workers", type=int, default=None, help="parsing processes (0: none)"
    )
    p.add_argument(
        "--beam_pipeline_options",
        default=None,
        help="build with Apache Beam: comma-separated pipeline options, e.g. "
        "runner=DirectRunner,direct_num_workers=2",
    )
    args = p.parse_args(argv)
    builder = prepare(
        args.config,
        args.data_dir,
        args.manual_dir,
        skip_bad=args.skip_bad,
        num_workers=args.num_workers,
        max_bad_fraction=args.max_bad_fraction,
        overwrite=args.overwrite,
        beam_pipeline_options=args.beam_pipeline_options,
    )
    rep = report(builder)
    print(f"prepared {builder.info.full_name} in {builder.data_dir}")
    print(f"examples per split: {rep['written']}; skipped: {rep['skipped']}")


if __name__ == "__main__":
    from astrom3_jax import errors

    try:
        main()
    except errors.UserError as e:  # bad input or no network: one clear message
        raise SystemExit(f"error: {e}") from None
