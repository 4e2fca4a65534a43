"""The base run config: every field a run reads, declared and documented here.

Pre-training (pretrain.py) and fine-tuning (finetune.py) configs start from
`get_config()` and change values only; the code reads no field that is not
declared here (no hidden defaults), so every field shows up in a run's
config.json and can be set on the command line with `--config.<field>=...`.
"""

import ml_collections


def eval_entry(kind: str, split: str, every: str, prefix: str, **options) -> dict:
    """One `config.evals` entry: evaluator `kind` on `split`, run `every`
    'epoch' or at the 'end', its metrics named `prefix` + name."""
    return {
        "type": kind,
        "split": split,
        "every": every,
        "prefix": prefix,
        "options": options,
    }


def get_config() -> ml_collections.ConfigDict:
    """The published CLIP pre-training run (Rizhko & Bloom 2024)."""
    # Local: astrom3_jax.models loads Flax; reading a config should not.
    from astrom3_jax.models.config import paper_model_config

    c = ml_collections.ConfigDict()
    # The named variant this config was made from (paper | cpu | smoke): a
    # size left at the variant's value is taken from init_from.
    c.preset = "paper"
    # Data.
    c.dataset = "full_42"  # astrom3/<config> TFDS builder config
    c.data_dir = ""  # TFDS data_dir; '' = the TFDS default
    c.seq_len = 200  # light-curve rows per object (random crop in training)
    c.worker_count = 0  # grain workers (batches do not depend on it)
    # Decode each split into memory once (~0.7 GB for full_42): ~5x the input
    # throughput of reading the array_record files every epoch. Only when the
    # split, measured, fits in this share of the available memory; otherwise
    # it is read from its files (a log line says which).
    c.cache_data = True
    c.cache_memory_fraction = 0.5
    # Optimisation, as published: Adam with coupled L2 decay, warm-up, then
    # reduce-on-plateau and early stopping on the validation loss.
    c.batch_size = 512  # global, over all devices and hosts
    c.eval_batch_size = 512
    c.test_batch_size = 0  # fine-tuning's test evaluation; 0: eval_batch_size
    c.num_epochs = 100
    c.max_steps_per_epoch = 0  # 0: the whole epoch (last partial batch dropped)
    c.learning_rate = 0.00392
    c.beta1 = 0.926
    c.beta2 = 0.999
    c.eps = 1e-8
    c.weight_decay = 0.00467  # coupled L2: added to the gradient before Adam
    c.grad_clip = 45.0  # 0 disables
    c.grad_clip_mode = "global_norm"  # 'global_norm' | 'value'
    c.warmup_epochs = 10
    c.warmup_start_factor = 1e-5
    c.warmup_per_step = False  # False: lr changes once per epoch, as torch's
    c.plateau_factor = 0.1125
    c.plateau_patience = 3
    c.plateau_threshold = 1e-4  # relative, as torch's ReduceLROnPlateau
    c.early_stopping_patience = 6
    c.seed = 42  # initialisation, shuffling, dropout and the evaluation key
    # Starting point (big_vision's order: resume the workdir, else init_from,
    # else scratch). init_from: a pre-training workdir, an imported-weights
    # workdir, a published-weights folder or a Hub id; its architecture is
    # taken over (sizes set here that contradict it are refused).
    c.init_from = ""
    c.init_from_step = "best"  # 'best' | 'latest' | a step number
    # init_from must come from the same release and split seed as `dataset`
    # (else test objects leaked into pre-training); True overrides the guard.
    c.allow_data_mismatch = False
    # Fine-tuning only.
    c.mode = ""  # photo | spectra | meta | all ('' for pre-training)
    c.subset = ""  # the subset the hyperparameters were tuned for ('' any)
    c.pretrained = False  # True: the config expects init_from
    c.freeze = ""  # '' | 'none' | 'encoders' (a linear probe: only the head)
    # Drop each modality of a training object with this probability (never
    # all of them), so that a fused classifier learns to do without any one.
    c.modality_dropout = 0.0
    # Evaluations (training/evaluators.py): name -> {type, split, every,
    # prefix, options}. every='epoch': on each validation pass ('retrieval',
    # 'classification'); every='end': on the best checkpoint once training
    # ends ('report').
    c.evals = {"val": eval_entry("retrieval", "validation", "epoch", "val_")}
    c.full_retrieval_max = 20000  # retrieval over at most this many objects
    # Run.
    c.log_every_steps = 20  # fetch step metrics from the device this often
    c.checkpoint_every_steps = 0  # also save mid-epoch (0: at epoch ends only)
    c.keep_best = 1
    c.progress_bar = True
    c.distributed = False  # jax.distributed.initialize() (multi-host)
    # The published CLIP model (15,869,827 parameters), pre-training dropouts.
    c.model = paper_model_config()
    return c
