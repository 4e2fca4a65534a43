r"""Record the normalisation statistics a workdir's model was trained with.

  python -m astrom3_jax.record_stats --workdir W \
      (--info_json RELEASE/splits/full/42/info.json | --dataset CONFIG [--data_dir D])

`predict` normalises a catalogue with the statistics stored in a workdir;
training runs and `import_weights` record their own.
"""

from __future__ import annotations

from absl import flags

from astrom3_jax import cli, errors
from astrom3_jax.data import datasets, normalisation

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", None, "Workdir to record the statistics in.")
    flags.DEFINE_string("info_json", None, "A release split folder's info.json.")
    flags.DEFINE_string("dataset", None, "A prepared astrom3 config, e.g. full_42.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir of --dataset.")
    flags.mark_flags_as_required(["workdir"])


def record(workdir: str, *, info_json=None, dataset=None, data_dir=None):
    """Write the statistics of `info_json` or of the prepared `dataset` into
    `workdir`; returns (the file written, where the statistics came from)."""
    if (info_json is None) == (dataset is None):
        raise errors.ConfigError("give one of --info_json and --dataset")
    if info_json:
        stats = normalisation.NormalisationStats.from_info_json(info_json)
    else:
        builder = datasets.builder(dataset, data_dir)
        if not builder.is_prepared():
            raise errors.DataNotPreparedError(
                datasets.missing_data_message(dataset, data_dir)
            )
        stats = normalisation.stats_of_prepared(builder.data_dir)
    return normalisation.write_stats(workdir, stats), stats.source


def main(argv):
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    path, source = record(
        FLAGS.workdir,
        info_json=FLAGS.info_json,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
    )
    print(f"wrote {path} (statistics from {source})")


if __name__ == "__main__":
    define_flags()
    cli.main(main)
