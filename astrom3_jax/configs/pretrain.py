"""AstroM3 CLIP pre-training configs: `get_config('paper' | 'cpu' | 'smoke')`.

    python -m astrom3_jax.train --config configs/pretrain.py:paper \\
        --workdir runs/clip_paper
    python -m astrom3_jax.train --config configs/pretrain.py:cpu \\
        --workdir runs/clip_cpu
    python -m astrom3_jax.train --config configs/pretrain.py:smoke \\
        --workdir /tmp/clip_smoke

Any field can be overridden, e.g. `--config.batch_size=64`.
"""

import ml_collections

from astrom3_jax.configs import base


def paper() -> ml_collections.ConfigDict:
    """The published model and hyperparameters (the base config; Rizhko & Bloom
    2024) on the real release: build the data set first (see the README)."""
    return base.get_config()


def cpu() -> ml_collections.ConfigDict:
    """A small model that pre-trains on the synthetic survey in minutes on 2
    CPU cores and still learns (the data set is generated on first use)."""
    c = paper()
    c.preset = "cpu"
    c.dataset = "synthetic_small"
    c.batch_size = 64
    c.eval_batch_size = 256
    # Up to 60 epochs; on the small survey the validation loss keeps creeping
    # down, so early stopping seldom ends it sooner.
    c.num_epochs = 60
    c.learning_rate = 1e-3
    c.warmup_epochs = 2
    c.warmup_per_step = True
    c.plateau_factor = 0.3
    c.cache_data = True
    m = c.model
    m.embed_dim = 128
    m.photometry.update(d_model=32, n_heads=2, d_ff=64, n_layers=2)
    m.photometry.dropout = 0.1
    m.spectra.conv_channels = (3, 16, 16, 16, 16)
    m.spectra.dropout = 0.1
    m.metadata.hidden_dim = 128
    m.metadata.dropout = 0.1
    return c


def smoke() -> ml_collections.ConfigDict:
    """Seconds; for tests and notebooks."""
    c = cpu()
    c.preset = "smoke"
    c.batch_size = 16
    c.eval_batch_size = 32
    c.num_epochs = 2
    c.max_steps_per_epoch = 3
    c.warmup_epochs = 1
    c.progress_bar = False
    m = c.model
    m.embed_dim = 16
    m.photometry.update(d_model=8, n_heads=2, d_ff=16, n_layers=1)
    m.spectra.conv_channels = (3, 4, 4, 4, 4)
    m.metadata.hidden_dim = 16
    return c


VARIANTS = {"paper": paper, "cpu": cpu, "smoke": smoke}


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}; choose from {sorted(VARIANTS)}")
    return VARIANTS[arg]()
