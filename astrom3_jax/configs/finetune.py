r"""AstroM3 fine-tuning configs: `get_config('<mode>,<subset>[,clip][,<preset>]')`.

mode: photo | spectra | meta | all (the three modalities fused by the mean of
  their normalised embeddings); subset: full | sub50 | sub25 | sub10;
  `clip`: start from CLIP pre-training (set --config.init_from) with the
  hyperparameters tuned for that; preset: paper (default) | cpu | smoke.

    python -m astrom3_jax.finetune --config configs/finetune.py:photo,sub10,clip \
        --config.init_from=AstroMLCore/AstroM3-CLIP-42 --workdir runs/photo_sub10
    python -m astrom3_jax.finetune --config configs/finetune.py:spectra,full \
        --config.dataset=full_0 --workdir runs/spectra_full_seed0
    python -m astrom3_jax.train --config configs/pretrain.py:cpu --workdir runs/clip_cpu
    python -m astrom3_jax.finetune --config configs/finetune.py:photo,sub10,clip,cpu \
        --config.init_from=runs/clip_cpu --workdir runs/photo_sub10_cpu
    python -m astrom3_jax.finetune --config configs/finetune.py:meta,full,smoke \
        --workdir /tmp/ft_smoke
Options: --config.freeze=encoders (a linear probe: only the head trains),
--config.model.fusion=concat (all: concatenate instead of averaging),
--config.init_from_step=best|latest|N, --config.allow_data_mismatch=True.
"""

import ml_collections

from astrom3_jax.configs import base, pretrain
from astrom3_jax.data import modalities


def modes() -> dict[str, tuple[str, ...]]:
    """Fine-tuning mode -> the modalities its classifier reads: one mode per
    registered modality (its registry entry's mode name), and `all` for the
    three modalities of the paper fused."""
    out = {e.mode_name: (e.name,) for e in modalities.get(modalities.names())}
    out["all"] = modalities.DEFAULT_MODALITIES
    return out


# The paper's four modes (PAPER_RUNS holds their published hyperparameters).
MODES = ("photo", "spectra", "meta", "all")
SUBSETS = ("full", "sub50", "sub25", "sub10")
PRESETS = ("paper", "cpu", "smoke")

# The published per-run hyperparameters (Rizhko & Bloom 2024, tuned with
# Optuna; one set for each of the 32 mode x subset x scratch/CLIP runs):
# (mode, subset, clip) -> (lr, beta1, weight decay, dropout(s),
# plateau factor). Dropouts are per modality of the mode (p/s/m for all).
PAPER_RUNS = {
    ("photo", "full", False): (2.93e-3, 0.990, 4.71e-5, (0.231,), 0.506),
    ("photo", "sub50", False): (4.09e-3, 0.965, 1.89e-5, (0.099,), 0.386),
    ("photo", "sub25", False): (8.66e-4, 0.960, 7.02e-4, (0.131,), 0.945),
    ("photo", "sub10", False): (1.29e-4, 0.915, 2.41e-3, (0.092,), 0.932),
    ("photo", "full", True): (9.34e-4, 0.835, 4.66e-4, (0.149,), 0.385),
    ("photo", "sub50", True): (2.93e-4, 0.974, 5.80e-5, (0.302,), 0.774),
    ("photo", "sub25", True): (5.75e-4, 0.812, 7.71e-2, (0.292,), 0.424),
    ("photo", "sub10", True): (3.21e-4, 0.738, 2.31e-3, (0.196,), 0.907),
    ("spectra", "full", False): (3.97e-3, 0.762, 1.58e-4, (0.316,), 0.602),
    ("spectra", "sub50", False): (9.11e-3, 0.902, 4.01e-4, (0.215,), 0.819),
    ("spectra", "sub25", False): (4.63e-3, 0.701, 1.14e-4, (0.360,), 0.849),
    ("spectra", "sub10", False): (5.73e-3, 0.971, 8.31e-3, (0.219,), 0.914),
    ("spectra", "full", True): (2.55e-3, 0.872, 8.09e-5, (0.399,), 0.622),
    ("spectra", "sub50", True): (2.51e-3, 0.709, 6.82e-5, (0.397,), 0.603),
    ("spectra", "sub25", True): (9.69e-3, 0.708, 2.67e-5, (0.283,), 0.104),
    ("spectra", "sub10", True): (9.02e-3, 0.900, 1.03e-5, (0.377,), 0.103),
    ("meta", "full", False): (2.74e-3, 0.922, 2.62e-4, (0.192,), 0.372),
    ("meta", "sub50", False): (8.94e-3, 0.950, 4.31e-5, (0.231,), 0.397),
    ("meta", "sub25", False): (8.22e-3, 0.904, 2.24e-4, (0.135,), 0.308),
    ("meta", "sub10", False): (9.59e-3, 0.960, 1.67e-3, (0.148,), 0.480),
    ("meta", "full", True): (3.81e-3, 0.760, 8.92e-5, (0.326,), 0.332),
    ("meta", "sub50", True): (9.83e-3, 0.795, 1.05e-4, (0.286,), 0.293),
    ("meta", "sub25", True): (4.52e-3, 0.953, 5.15e-5, (0.258,), 0.651),
    ("meta", "sub10", True): (1.05e-3, 0.751, 1.05e-5, (0.176,), 0.553),
    ("all", "full", False): (4.25e-3, 0.915, 6.93e-5, (0.105, 0.351, 0.316), 0.100),
    ("all", "sub50", False): (4.05e-3, 0.910, 1.92e-4, (0.278, 0.400, 0.237), 0.241),
    ("all", "sub25", False): (2.98e-3, 0.951, 2.70e-4, (0.185, 0.237, 0.186), 0.548),
    ("all", "sub10", False): (1.83e-3, 0.904, 3.10e-5, (0.058, 0.331, 0.263), 0.425),
    ("all", "full", True): (9.50e-3, 0.946, 5.94e-5, (0.233, 0.177, 0.118), 0.196),
    ("all", "sub50", True): (3.88e-3, 0.863, 8.30e-5, (0.081, 0.035, 0.272), 0.257),
    ("all", "sub25", True): (1.75e-3, 0.729, 1.21e-4, (0.144, 0.142, 0.308), 0.348),
    ("all", "sub10", True): (9.99e-3, 0.968, 2.58e-4, (0.308, 0.189, 0.106), 0.119),
}

# cpu/smoke: one set for scratch and CLIP alike (not tuned per run), so that
# the comparison measures the initialisation alone.
CPU_RUN = (1e-3, 0.9, 1e-4, None, 0.5)  # None: keep the model's dropouts


def parse(arg: str) -> tuple[str, str, bool, str]:
    """'photo,sub10,clip,cpu' -> ('photo', 'sub10', True, 'cpu')."""
    tokens = [t.strip() for t in arg.split(",") if t.strip()]
    known = modes()
    mode = next((t for t in tokens if t in known), None)
    subset = next((t for t in tokens if t in SUBSETS), None)
    preset = next((t for t in tokens if t in PRESETS), "paper")
    unknown = [t for t in tokens if t not in (*known, *SUBSETS, *PRESETS, "clip")]
    if mode is None or subset is None or unknown:
        raise ValueError(
            f"config argument {arg!r}: expected '<mode>,<subset>[,clip][,<preset>]' "
            f"with mode in {list(known)}, subset in {list(SUBSETS)}, preset in "
            f"{list(PRESETS)}" + (f"; not understood: {unknown}" if unknown else "")
        )
    return mode, subset, "clip" in tokens, preset


def _dataset(preset: str, subset: str, seed: int = 42) -> str:
    if preset == "paper":
        return f"{subset}_{seed}"
    return f"synthetic_small_{subset}_{seed}"


def get_config(arg: str = "photo,full") -> ml_collections.ConfigDict:
    """The config `arg` names (grammar in the module docstring).

    Presets: paper, the published per-run hyperparameters on the real
    release (the split seed comes from the data set config, default 42);
    cpu, the `cpu` pre-training model on the synthetic survey, minutes on 2
    CPU cores; smoke, seconds, for tests and notebooks.
    """
    mode, subset, clip, preset = parse(arg)
    c = pretrain.get_config(preset)
    c.preset = preset
    c.mode, c.subset, c.pretrained = mode, subset, clip
    c.dataset = _dataset(preset, subset)
    m = c.model
    m.task = "classification"
    m.modalities = modes()[mode]
    m.fusion = "avg"
    if preset == "paper" and (mode, subset, clip) not in PAPER_RUNS:
        raise ValueError(
            f"config argument {arg!r}: the paper has no hyperparameters for mode "
            f"{mode!r}; use the cpu or smoke preset"
        )
    lr, beta1, wd, dropouts, factor = (
        PAPER_RUNS[(mode, subset, clip)] if preset == "paper" else CPU_RUN
    )
    c.learning_rate, c.beta1, c.weight_decay, c.plateau_factor = lr, beta1, wd, factor
    if dropouts is not None:
        for name, p in zip(m.modalities, dropouts, strict=True):
            m[name].dropout = p
    # Clipping 5 for the light-curve and spectrum classifiers, none otherwise.
    c.grad_clip = 5.0 if mode in ("photo", "spectra") else 0.0
    # Validation metrics every epoch; the test report (eval.json,
    # predictions.npz, confusion.png) on the best checkpoint at the end, and
    # its calibration for predict (temperature, out-of-distribution score).
    c.evals = {
        "val": base.eval_entry("classification", "validation", "epoch", "val_"),
        "test": base.eval_entry("report", "test", "end", "test_", files=True),
        "calibration": base.eval_entry("calibrate", "validation", "end", "cal_"),
    }
    c.num_epochs = {"paper": 50, "cpu": 30, "smoke": 2}[preset]
    if preset == "cpu":
        # sub10 of the small survey has 150 training objects: batch 32 keeps
        # a few steps per epoch; warm-up over 2 epochs, as in pre-training.
        c.batch_size = 32
        c.eval_batch_size = 64
    c.test_batch_size = c.eval_batch_size
    return c
