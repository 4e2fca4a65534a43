r"""Record the normalisation statistics a workdir's model was trained with.

  python -m astrom3_jax.record_stats --workdir W \
      (--info_json RELEASE/splits/full/42/info.json | --dataset CONFIG [--data_dir D])

`predict` normalises a catalogue's values with the statistics stored in the
workdir. Training runs and `import_weights` record them; this command gives
them to a workdir that lacks them: from a release configuration's info.json
(published weights) or from a data set prepared with
`python -m tfds_builders.build` (see astrom3_jax/data/normalisation.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from astrom3_jax import errors
from astrom3_jax.data import datasets, normalisation


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(
        description="Record normalisation statistics in a training workdir."
    )
    p.add_argument("--workdir", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--info_json", help="a release split folder's info.json")
    src.add_argument("--dataset", help="a prepared astrom3 config, e.g. full_42")
    p.add_argument("--data_dir", default=None, help="TFDS data dir of --dataset")
    args = p.parse_args(argv)
    if args.info_json:
        stats = normalisation.NormalisationStats.from_info_json(args.info_json)
    else:
        builder = datasets.builder(args.dataset, args.data_dir)
        if not builder.is_prepared():
            raise errors.DataNotPreparedError(
                datasets.missing_data_message(args.dataset, args.data_dir)
            )
        stats = normalisation.stats_of_prepared(builder.data_dir)
    path = normalisation.write_stats(args.workdir, stats)
    print(f"wrote {path} (statistics from {stats.source})")
    return path


if __name__ == "__main__":
    try:
        main()
    except errors.UserError as e:
        raise SystemExit(f"error: {e}") from None
