"""Checks a whole config before anything is written, listing every problem.

A typo must fail before `config.json` is written, so it never poisons a
workdir that later runs would have to match.
"""

from __future__ import annotations

import math

from astrom3_jax import errors
from astrom3_jax.data import modalities
from astrom3_jax.data import names as dataset_names
from astrom3_jax.training import evaluators
from astrom3_jax.training.tasks import FREEZE_CHOICES

ATTENTION_KINDS = ("probsparse", "full")
TASKS = ("clip", "classification")
FUSIONS = ("avg", "concat")
DTYPES = ("float32", "bfloat16", "float16")


def _positive_int(problems, name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.append(f"{name} must be a positive integer, got {value!r}")


def _fraction(problems, name, value, *, upper_open=True):
    ok = isinstance(value, int | float) and 0.0 <= value < 1.0
    if not ok:
        problems.append(f"{name} must be in [0, 1), got {value!r}")


def _model_problems(m) -> list[str]:
    problems = []
    task = m.task
    if task not in TASKS:
        problems.append(f"model.task must be one of {TASKS}, got {task!r}")
    names = tuple(m.modalities)
    known = tuple(modalities.names())
    unknown = [n for n in names if n not in known]
    if unknown:
        problems.append(
            f"model.modalities: unknown {unknown}; known modalities: {list(known)}"
        )
    if len(set(names)) != len(names):
        problems.append(f"model.modalities lists a modality twice: {list(names)}")
    if task == "clip" and len(names) < 2:
        problems.append("CLIP pre-training needs at least two model.modalities")
    if not names:
        problems.append("model.modalities is empty")
    if m.fusion not in FUSIONS:
        problems.append(f"model.fusion must be one of {FUSIONS}, got {m.fusion!r}")
    if m.dtype not in DTYPES:
        problems.append(f"model.dtype must be one of {DTYPES}, got {m.dtype!r}")
    _positive_int(problems, "model.embed_dim", m.embed_dim)
    _positive_int(problems, "model.num_classes", m.num_classes)
    if "photometry" in names:
        p = m.photometry
        if p.attention not in ATTENTION_KINDS:
            problems.append(
                f"model.photometry.attention must be one of {ATTENTION_KINDS}, "
                f"got {p.attention!r}"
            )
        for k in ("seq_len", "d_model", "n_heads", "d_ff", "n_layers"):
            _positive_int(problems, f"model.photometry.{k}", p[k])
        if (
            isinstance(p.d_model, int)
            and isinstance(p.n_heads, int)
            and p.n_heads > 0
            and p.d_model % p.n_heads
        ):
            problems.append(
                f"model.photometry.d_model ({p.d_model}) must divide by n_heads "
                f"({p.n_heads})"
            )
    for name in names:
        if name in m and "dropout" in m[name]:
            _fraction(problems, f"model.{name}.dropout", m[name].dropout)
    return problems


def problems(config) -> list[str]:
    """Every problem found in `config` (empty when it is valid)."""
    # Local: datasets loads the TFDS builder, which config checks rarely need.
    from astrom3_jax.data import datasets

    out = []
    try:
        datasets.check_config_name(config.dataset)
    except ValueError as e:
        out.append(f"dataset: {e}")
    for k in ("batch_size", "eval_batch_size", "seq_len", "keep_best"):
        _positive_int(out, k, config[k])
    if not isinstance(config.num_epochs, int) or config.num_epochs < 0:
        out.append(f"num_epochs must be an integer >= 0, got {config.num_epochs!r}")
    lr = config.learning_rate
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        out.append(f"learning_rate must be a positive finite number, got {lr!r}")
    for k in ("beta1", "beta2"):
        _fraction(out, k, config[k])
    if config.grad_clip < 0:
        out.append(f"grad_clip must be >= 0 (0 disables), got {config.grad_clip!r}")
    if config.weight_decay < 0:
        out.append(f"weight_decay must be >= 0, got {config.weight_decay!r}")
    if "photometry" in tuple(config.model.modalities):
        if config.seq_len != config.model.photometry.seq_len:
            out.append(
                f"seq_len ({config.seq_len}) must equal model.photometry.seq_len "
                f"({config.model.photometry.seq_len})"
            )
    if config.freeze not in FREEZE_CHOICES:
        out.append(f"freeze must be one of {FREEZE_CHOICES}, got {config.freeze!r}")
    _fraction(out, "modality_dropout", config.modality_dropout)
    out += evaluators.check(config)
    out += _finetune_problems(config)
    return out + _model_problems(config.model)


def _finetune_problems(config) -> list[str]:
    """A classifier's data set must be the subset its hyperparameters were
    chosen for; a `clip` fine-tuning config needs init_from."""
    if config.model.task != "classification":
        return []
    out = []
    try:
        actual = dataset_names.subset_of(config.dataset)
    except ValueError:
        actual = None  # an unknown data set name is reported above
    if config.subset and actual is not None and actual != config.subset:
        out.append(
            f"config.dataset={config.dataset!r} is subset {actual!r}, but the config "
            f"was made for subset {config.subset!r}; pick the data set with the same "
            f"subset (e.g. {config.subset}_<seed>) or make the config for {actual!r}"
        )
    if config.pretrained and not config.init_from:
        out.append(
            "a `clip` fine-tuning config needs --config.init_from=<pre-training "
            "workdir, imported-weights workdir or Hub id such as "
            "AstroMLCore/AstroM3-CLIP-42>"
        )
    return out


def check_config(config) -> None:
    """Raise ConfigError listing every problem of `config`."""
    found = problems(config)
    if found:
        raise errors.ConfigError(
            "invalid config:\n" + "\n".join(f"  - {p}" for p in found)
        )
