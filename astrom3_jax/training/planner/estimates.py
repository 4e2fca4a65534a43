"""Wall time of a whole run from a plan's step times: the real release's
split sizes and the epochs x steps of a config, at the roofline speed.
"""

from __future__ import annotations

import math

from astrom3_jax.training.planner.plans import Plan

# (train, validation, test) objects of the real release's splits (seed 42;
# other seeds differ by a few objects). sub50's validation and test sizes are
# not published; they are taken as half of full's, as its training set is.
RELEASE_SPLITS = {
    "full": (17063, 2152, 2225),
    "sub50": (8526, 1076, 1112),
    "sub25": (4260, 532, 555),
    "sub10": (1660, 210, 220),
}


def split_sizes_of(dataset: str) -> dict | None:
    """{'train', 'validation', 'test'} sizes of a real-release data set name
    ('full_42', 'sub10_0'); None for others (pass split sizes instead)."""
    subset = dataset.split("_")[0]
    if dataset.startswith("synthetic") or subset not in RELEASE_SPLITS:
        return None
    return dict(
        zip(("train", "validation", "test"), RELEASE_SPLITS[subset], strict=True)
    )


def run_time(p: Plan, config, sizes: dict) -> dict:
    """A run's wall time at the roofline speed, every epoch run (no early
    stop): a lower bound for that many epochs, as real steps are slower."""
    train = p.steps["train"]
    steps_per_epoch = sizes["train"] // train.global_batch
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    eval_s = 0.0
    if "eval" in p.steps:
        ev = p.steps["eval"]
        eval_s = math.ceil(sizes.get("validation", 0) / ev.global_batch) * ev.est_step_s
    epoch_s = steps_per_epoch * train.est_step_s + eval_s
    total = config.num_epochs * epoch_s
    finetune = config.model.task == "classification"
    if finetune and "eval" in p.steps and sizes.get("test"):  # the test pass
        ev = p.steps["eval"]
        total += math.ceil(sizes["test"] / ev.global_batch) * ev.est_step_s
    return dict(
        epochs=int(config.num_epochs),
        steps_per_epoch=int(steps_per_epoch),
        train_objects=int(sizes["train"]),
        epoch_s=epoch_s,
        total_s=total,
    )
