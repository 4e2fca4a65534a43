"""The one training loop and what plugs into it.

- `loop.py`: resume / init_from / scratch, the epoch loop, evaluation,
  checkpoints, early stopping; it knows nothing of CLIP or classes.
- `tasks.py`: what differs between pre-training and fine-tuning (model
  builder, per-device loss and eval outputs, split metrics, which
  parameters train, which metric picks the best checkpoint).
- `optim.py`: the optimiser, warm-up and plateau / early-stopping state.
- `init_from.py`: starting a run from another run's (or published) weights.
"""
