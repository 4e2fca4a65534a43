r"""Prepares an astrom3 TFDS config from Python (the `tfds` CLI needs TensorFlow).

    python -m tfds_builders.build --config full_42 [--manual_dir DIR] \
        [--data_dir DIR] [--skip_bad] [--num_workers N]

Without --manual_dir the raw release is downloaded from the Hugging Face Hub.
Synthetic configs (synthetic_small, synthetic_full) generate their raw files.
"""

from __future__ import annotations

import argparse
import json
import os

from tfds_builders.astrom3 import astrom3_dataset_builder as astrom3


def prepare(
    config_name: str = "full_42",
    data_dir: str | None = None,
    manual_dir: str | None = None,
    *,
    skip_bad: bool = False,
    num_workers: int | None = None,
):
    """Builds `astrom3/<config_name>` (once) and returns the ready builder.

    Read it with `builder.as_data_source(split)`; splits are train,
    validation, test (+ unseen for synthetic configs).
    """
    import tensorflow_datasets as tfds

    builder = astrom3.Builder(
        config=config_name,
        data_dir=data_dir,
        skip_bad=skip_bad,
        num_workers=num_workers,
    )
    dl_config = tfds.download.DownloadConfig(
        manual_dir=os.path.abspath(manual_dir) if manual_dir else None
    )
    builder.download_and_prepare(file_format="array_record", download_config=dl_config)
    return builder


def report(builder) -> dict:
    """The bad-object report written next to the prepared data (bad_objects.json)."""
    with open(os.path.join(builder.data_dir, astrom3.REPORT_NAME)) as f:
        return json.load(f)


def main(argv=None):
    names = [c.name for c in astrom3.Builder.BUILDER_CONFIGS]
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
