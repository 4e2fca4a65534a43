"""AstroM3 CLIP pre-training configs: `get_config('paper' | 'cpu' | 'smoke')`.

paper: the published model and hyperparameters (Rizhko & Bloom 2024) on
  the real release (build the data set first, see the README):
    python -m astrom3_jax.train --config configs/pretrain.py:paper \\
        --workdir runs/clip_paper
cpu: a small model that pre-trains on the synthetic survey in minutes on 2
  CPU cores and still learns (the data set is generated on first use):
    python -m astrom3_jax.train --config configs/pretrain.py:cpu \\
        --workdir runs/clip_cpu
smoke: seconds; for tests and notebooks:
    python -m astrom3_jax.train --config configs/pretrain.py:smoke \\
        --workdir /tmp/clip_smoke
Any field can be overridden, e.g. `--config.batch_size=64`.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
    """The published CLIP model (15,869,827 parameters), pre-training dropouts."""
    from astrom3_jax.models.config import paper_model_config

    return paper_model_config()


def paper() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Data.
    c.dataset = "full_42"  # astrom3/<config> TFDS builder config
    c.data_dir = ""  # TFDS data_dir; '' = the TFDS default
    c.seq_len = 200
    c.worker_count = 0  # grain workers (batches do not depend on it)
    # Decode each split into memory once (~0.7 GB for full_42): ~5x the input
    # throughput of reading the array_record files every epoch.
    c.cache_data = True
    # Optimisation, as published: Adam with coupled L2 decay, warm-up, then
    # reduce-on-plateau and early stopping on the validation loss.
    c.batch_size = 512  # global, over all devices and hosts
    c.eval_batch_size = 512
    c.num_epochs = 100
    c.max_steps_per_epoch = 0  # 0: the whole epoch (last partial batch dropped)
    c.learning_rate = 0.00392
    c.beta1 = 0.926
    c.beta2 = 0.999
    c.eps = 1e-8
    c.weight_decay = 0.00467  # coupled L2: added to the gradient before Adam
    c.grad_clip = 45.0  # global norm; 0 disables
    c.warmup_epochs = 10
    c.warmup_start_factor = 1e-5
    c.warmup_per_step = False  # False: lr changes once per epoch, as torch's
    c.plateau_factor = 0.1125
    c.plateau_patience = 3
    c.plateau_threshold = 1e-4  # relative, as torch's ReduceLROnPlateau
    c.early_stopping_patience = 6
    c.seed = 42
    # Run.
    c.checkpoint_every_steps = 0  # also save mid-epoch (0: at epoch ends only)
    c.keep_best = 1
    c.full_retrieval_max = 20000  # validation retrieval over the whole split
    c.progress_bar = True
    c.distributed = False  # jax.distributed.initialize() (multi-host)
    c.model = model_config()
    return c


def cpu() -> ml_collections.ConfigDict:
    c = paper()
    c.dataset = "synthetic_small"
    c.batch_size = 64
    c.eval_batch_size = 256
    c.num_epochs = 60  # early stopping ends it after ~30 epochs (~3 min, 2 cores)
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
    c = cpu()
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
