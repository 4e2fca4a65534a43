r"""Classes, embeddings and nearest known stars for your own stars.

  python -m astrom3_jax.predict --workdir runs/all_sub10 \
      --catalog my_stars/catalog.csv --out predictions/my_stars \
      [--reference exports/clip_cpu] [--k 10] [--skip_bad] \
      [--max_bad_fraction 0.05] [--step best] [--overwrite] [--shard i/n]
  python -m astrom3_jax.predict --merge OUT_0,OUT_1,... --out predictions/all

--workdir is any workdir this project writes (a fine-tuned classifier, a
CLIP pre-training, imported published weights) that holds the normalisation
statistics of its training data (recorded by train, finetune and
import_weights). --catalog is a table of your stars (format in the README,
"Your own stars"); --reference an export of labelled objects (e.g. the
training split) for nearest neighbours, a k-NN class vote (so a CLIP
workdir classifies too), outlier and mislabel scores. What is written is
described in astrom3_jax/predict_lib.py.
"""

from __future__ import annotations

from absl import flags

from astrom3_jax import cli, errors
from astrom3_jax.cli import host_memory

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", None, "Workdir, weights folder or Hub model id.")
    flags.DEFINE_string("catalog", None, "Catalogue table (CSV, ECSV, FITS, VOTable).")
    flags.DEFINE_string("out", None, "Output folder.")
    flags.DEFINE_string("reference", None, "Export of labelled reference objects.")
    flags.DEFINE_integer("k", 10, "Nearest reference objects per star.")
    flags.DEFINE_string("step", None, "'best' (default), 'latest' or a step number.")
    flags.DEFINE_bool("skip_bad", False, "Leave bad rows out (listed in bad_rows.csv).")
    flags.DEFINE_float(
        "max_bad_fraction", 0.05, "With --skip_bad: fail above this share of bad rows."
    )
    flags.DEFINE_integer("batch_size", 256, "Global batch size.")
    flags.DEFINE_integer(
        "num_workers", None, "Preprocessing worker processes (default: none on 2 CPUs)."
    )
    flags.DEFINE_string(
        "band",
        None,
        "Light-curve band of stars whose catalogue row names none "
        "(default: V if the file has it, else g, else the band with most points).",
    )
    flags.DEFINE_bool(
        "derive_photometry",
        None,
        "Measure amplitude, period and lksl_statistic from every light curve, "
        "catalogue values or not (default: when the model was trained on a "
        "*_derived data set; blank values are measured either way).",
    )
    flags.DEFINE_string(
        "shard", None, "i/n: predict only the i-th of n blocks of rows (then --merge)."
    )
    flags.DEFINE_list(
        "merge", None, "Shard output folders to join into --out (no prediction)."
    )
    flags.DEFINE_bool("overwrite", False, "Write into a non-empty --out.")
    flags.DEFINE_bool("tcmalloc", True, "On CPU, restart under tcmalloc if installed.")
    flags.mark_flags_as_required(["out"])


def main(argv):
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")

    if FLAGS.merge:
        from astrom3_jax.prediction import shards

        merged = shards.merge(FLAGS.merge, FLAGS.out)
        print(
            f"merged {len(FLAGS.merge)} shards of {merged['catalog']} into {FLAGS.out}"
        )
        return
    missing = [f for f in ("workdir", "catalog") if getattr(FLAGS, f) is None]
    if missing:
        raise errors.ConfigError(f"--{' and --'.join(missing)} needed (or --merge)")
    host_memory.reexec_with_tcmalloc(enabled=FLAGS.tcmalloc)
    # Local: it loads JAX, which must wait for the tcmalloc restart above.
    from astrom3_jax import predict_lib
    from astrom3_jax.prediction import shards as shards_lib

    step = FLAGS.step  # parsed where it is used (checkpoints.parse_step)
    result = predict_lib.predict(
        FLAGS.workdir,
        FLAGS.catalog,
        FLAGS.out,
        reference=FLAGS.reference,
        k=FLAGS.k,
        step=step,
        skip_bad=FLAGS.skip_bad,
        max_bad_fraction=FLAGS.max_bad_fraction,
        batch_size=FLAGS.batch_size,
        num_workers=FLAGS.num_workers,
        band=FLAGS.band,
        derive_photometry=FLAGS.derive_photometry,
        overwrite=FLAGS.overwrite,
        shard=None if FLAGS.shard is None else shards_lib.parse_shard(FLAGS.shard),
    )
    bad = f"; {len(result.bad_rows)} bad rows left out" if result.bad_rows else ""
    print(f"predicted {len(result.ids)} stars into {FLAGS.out}{bad}")
    if result.logits is None and FLAGS.reference is None:
        print(
            "this model has no classifier: predictions.csv gives no classes, and "
            f"the embeddings are in {FLAGS.out}/catalog/. For k-NN classes, "
            "outlier and mislabel scores, rerun with --reference <an "
            "export_embeddings folder of labelled objects>"
        )


if __name__ == "__main__":
    define_flags()
    cli.main(main)
