"""Small training setups: configs, fake examples, a toy classifier.

All use random examples in the stored TFDS layout (no data set to prepare).
tests/fixtures/pretrain_smoke/record_fixture.py imports `tiny_config` and
`fake_sources` from here: a change to either changes the numbers that
fixture recorded.
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from astrom3_jax.configs import finetune, pretrain


def fake_examples(n, seed):
    """Random examples in the stored TFDS layout (correlated modalities)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        z = rng.normal(size=3).astype(np.float32)
        t = int(rng.integers(20, 260))
        phot = np.stack(
            [np.sort(rng.uniform(size=t)), z[0] + rng.normal(size=t), np.ones(t)], 1
        )
        out.append(
            {
                "photometry": phot.astype(np.float32),
                "photometry_aux": np.r_[z, z].astype(np.float32),
                "spectra": (z[1] + rng.normal(size=(3, 2575))).astype(np.float32),
                "metadata": np.r_[np.tile(z, 11), z[:1]].astype(np.float32),
                "label": np.int64(i % 10),
            }
        )
    return out


def fake_sources(n_train=64, n_val=21):
    """Train and validation splits of fake examples (seeds 0 and 1)."""
    return {"train": fake_examples(n_train, 0), "validation": fake_examples(n_val, 1)}


def tiny_config(**kw):
    """The `smoke` pre-training config made fast: light curves cropped to 32,
    batches of 16, 3 epochs; `kw` overrides any field."""
    c = pretrain.get_config("smoke")
    c.seq_len = c.model.photometry.seq_len = 32  # light curves cropped short: fast
    c.batch_size = 16
    c.eval_batch_size = 16
    c.num_epochs = 3
    c.max_steps_per_epoch = 0
    c.update(kw)
    return c


def ft_config(arg, **kw):
    """The fine-tuning config `arg` (e.g. "all,full") at `smoke` size, shaped
    like `tiny_config`'s pre-training; 2 steps per epoch, `kw` overrides."""
    c = finetune.get_config(arg + ",smoke")
    c.seq_len = c.model.photometry.seq_len = 32  # as tiny_config's pre-training
    c.batch_size = c.eval_batch_size = c.test_batch_size = 16
    c.max_steps_per_epoch = 2
    c.update(kw)
    return c


class ToyClassifier(nnx.Module):
    """Metadata -> 10 logits. exp() makes a blown-up weight overflow to inf,
    as the CLIP temperature does in the real model."""

    def __init__(self, model_config, rngs):
        self.hidden = nnx.Linear(34, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, inputs, *, rngs=None):
        return jnp.exp(self.out(jnp.tanh(self.hidden(inputs["metadata"]))) / 4)


def toy_build(model_config, rngs):
    """A `build_fn` for the loop: the toy classifier (compiles in about a second)."""
    return ToyClassifier(model_config, rngs)
