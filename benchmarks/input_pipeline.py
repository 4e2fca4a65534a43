"""Input-pipeline throughput: training batches per second from a prepared TFDS set.

    python -m benchmarks.input_pipeline                       # builds a test set
    python -m benchmarks.input_pipeline --config=synthetic_small --data_dir=~/tfds

Without --config it first prepares (once, cached in --data_dir) an
array_record TFDS data set with the astrom3 public schema and realistic sizes
(light curves of 200-600 points, spectra 3 x 2575), then reads it through
`builder.as_data_source('train')` exactly as training does. With --config it
reads the prepared `astrom3/<config>` data set instead.

Prints samples/s for `cache=True` (decode once, then numpy gathers;
recommended for training) and `cache=False` (every batch read from the
array_record files and decoded). --profile prints where the time goes.
"""

import cProfile
import pstats
import time

import numpy as np
from absl import app, flags

from astrom3_jax.data import pipeline

_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/tmp/astrom3_bench_tfds", "TFDS data_dir (built here if missing)."
)
_CONFIG = flags.DEFINE_string("config", None, "Read prepared astrom3/<config>.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 8192, "Size of the built set.")
_BATCH = flags.DEFINE_integer("batch_size", 512, "Training batch size.")
_STEPS = flags.DEFINE_integer("steps", 40, "Timed batches per mode.")
_MODES = flags.DEFINE_list("modes", ["cache", "stream"], "cache and/or stream.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "grain worker processes.")
_THREADS = flags.DEFINE_integer("read_threads", 1, "grain read threads.")
_PROFILE = flags.DEFINE_bool("profile", False, "cProfile the timed batches.")


def _random_examples(num_examples: int):
    """Random examples in the astrom3 public schema, realistic sizes."""
    rng = np.random.default_rng(0)
    for i in range(num_examples):
        n = int(rng.integers(200, 601))
        t = np.sort(rng.random(n)).astype(np.float32)
        yield {
            "id": str(i),
            "name": f"bench{i}",
            "photometry": np.stack([t, *rng.normal(size=(2, n)).astype(np.float32)], 1),
            "photometry_aux": rng.normal(size=6).astype(np.float32),
            "spectra": rng.normal(size=(3, 2575)).astype(np.float32),
            "metadata": rng.normal(size=34).astype(np.float32),
            "label": int(rng.integers(10)),
        }


def _source():
    if _CONFIG.value:
        return pipeline.open_tfds_source(
            _SPLIT.value, config=_CONFIG.value, data_dir=_DATA_DIR.value
        )
    from astrom3_jax.data.astrom3_tfds import examples_builder

    return examples_builder.examples_source(
        _random_examples(_NUM_EXAMPLES.value), data_dir=_DATA_DIR.value
    )


def _time_mode(source, mode: str) -> None:
    t0 = time.perf_counter()
    it = pipeline.make_train_loader(
        source,
        batch_size=_BATCH.value,
        seed=0,
        cache=mode == "cache",
        worker_count=_WORKERS.value,
        read_threads=_THREADS.value,
    )
    for _ in range(3):  # warm up (and start prefetching)
        next(it)
    setup = time.perf_counter() - t0
    profiler = cProfile.Profile() if _PROFILE.value else None
    if profiler:
        profiler.enable()
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
        batch = next(it)
    elapsed = time.perf_counter() - t0
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    rate = _STEPS.value * _BATCH.value / elapsed
    shapes = {k: v.shape for k, v in batch.items()}
    print(f"{mode:>6}: {rate:9.0f} samples/s  (setup+3 batches {setup:.1f} s) {shapes}")


def main(argv):
    del argv
    source = _source()
    print(f"{len(source)} examples, batch {_BATCH.value}, {_STEPS.value} steps")
    for mode in _MODES.value:
        _time_mode(source, mode)


if __name__ == "__main__":
    app.run(main)
