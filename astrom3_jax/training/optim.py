"""Optimiser and learning-rate schedule of the AstroM3 recipe.

`make_optimizer` (clipping, coupled L2 decay, Adam), the warm-up and
`Schedule` (reduce-on-plateau, early stopping), as the reference trains.
"""

from __future__ import annotations

import dataclasses

import optax

CLIP_MODES = ("global_norm", "value")


def make_optimizer(config) -> optax.GradientTransformation:
    """Clip, coupled L2 decay, Adam moments; the learning rate comes later.

    Clipping comes first, by global norm or by value (as the published
    classifiers do). The decay is coupled: added to the gradient before the
    moment estimates, as torch's Adam(weight_decay=...) does. The learning
    rate is applied outside this transformation (`learning_rate`).
    """
    parts = []
    if config.grad_clip:
        mode = config.grad_clip_mode
        if mode == "global_norm":
            parts.append(optax.clip_by_global_norm(config.grad_clip))
        elif mode == "value":
            parts.append(optax.clip(config.grad_clip))
        else:
            raise ValueError(
                f"config.grad_clip_mode must be one of {CLIP_MODES}, got {mode!r}"
            )
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.scale_by_adam(b1=config.beta1, b2=config.beta2, eps=config.eps))
    return optax.chain(*parts)


def warmup_factor(config, step: int, steps_per_epoch: int) -> float:
    """torch LinearLR(start_factor, total_iters=warmup_epochs) as a factor:
    a linear warm-up from lr * `warmup_start_factor` (1e-5 in the recipe)."""
    if config.warmup_epochs <= 0:
        return 1.0
    epochs = step / steps_per_epoch
    if not config.warmup_per_step:
        epochs = float(step // steps_per_epoch)
    frac = min(epochs / config.warmup_epochs, 1.0)
    start = config.warmup_start_factor
    return start + (1.0 - start) * frac


def learning_rate(config, schedule: Schedule, step: int, steps_per_epoch: int):
    return (
        config.learning_rate
        * schedule.lr_scale
        * warmup_factor(config, step, steps_per_epoch)
    )


@dataclasses.dataclass
class Schedule:
    """Host-side plateau + early-stopping state (JSON in every checkpoint).

    Reduce-on-plateau watches the validation loss and is stepped once per
    epoch; early stopping watches the same loss.
    """

    lr_scale: float = 1.0
    plateau_best: float = float("inf")
    plateau_bad: int = 0
    stop_best: float = float("inf")
    stop_bad: int = 0

    def end_of_epoch(self, config, epoch: int, val_loss: float) -> bool:
        """Steps reduce-on-plateau (after warm-up); True when to stop early."""
        if epoch >= config.warmup_epochs:  # torch: warm-up steps, then plateau
            if val_loss < self.plateau_best * (1.0 - config.plateau_threshold):
                self.plateau_best, self.plateau_bad = val_loss, 0
            else:
                self.plateau_bad += 1
            if self.plateau_bad > config.plateau_patience:
                self.lr_scale *= config.plateau_factor
                self.plateau_bad = 0
        if val_loss < self.stop_best:
            self.stop_best, self.stop_bad = val_loss, 0
        else:
            self.stop_bad += 1
        return self.early_stopped(config)

    def early_stopped(self, config) -> bool:
        return self.stop_bad >= config.early_stopping_patience

    def to_json(self) -> dict:
        return {k: (None if v == float("inf") else v) for k, v in vars(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> Schedule:
        """From `to_json`; keys of older checkpoints that no longer exist
        (e.g. best_accuracy) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{k: float("inf") if v is None else v for k, v in d.items() if k in known}
        )
