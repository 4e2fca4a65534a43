"""The training layer: one loop, what plugs into it, and the machinery under it.

- `run(config, workdir)` (runner.py): the one entry to pre-training and
  fine-tuning; `config.model.task` picks the task, `config.evals` what is
  scored each epoch and at the end (evaluators.py, reports.py).

- `loop.py`: resume / init_from / scratch, the epoch loop, checkpoints,
  early stopping; it knows nothing of CLIP or classes.
- `tasks.py`: what differs between pre-training and fine-tuning (per-device
  loss and eval outputs, init_from, which parameters train, which metric
  picks the best checkpoint).
- `evaluation.py`: the one evaluation path (data-parallel predict over a
  data set) used by validation, test, export and predict;
  `evaluators.py`: split-level metrics chosen by `config.evals`.
- `losses.py`: the global-batch InfoNCE (with objects lacking modalities);
  `sharding.py`: the ('data',) mesh and `jax.shard_map` helpers.
- `optim.py`: the optimiser, warm-up and plateau / early-stopping state.
- `checkpoints.py` (Orbax I/O), `workdir.py` (a workdir's or any source's
  model), `init_from.py` (starting from another run's or published weights),
  `metrics_writer.py` (metrics.jsonl + TensorBoard), `validate.py` (config
  checks), `planner/` (ahead-of-time compilation for planning TPU runs).
"""


def run(config, workdir, **kwargs):
    """Train (or resume) in `workdir`, then score; see `runner.run`."""
    # Imported on use: the planner and checkpoint tools of this package must
    # not load the data pipeline and TFDS.
    from astrom3_jax.training import runner

    return runner.run(config, workdir, **kwargs)
