"""Loading the model a run starts from (`config.init_from`), with a leak guard.

`load_source` loads it; `check_same_data` refuses a pre-training whose
train split overlaps this run's test split.
"""

from __future__ import annotations

import re

from astrom3_jax import configs, errors
from astrom3_jax.data import modalities, names
from astrom3_jax.training import checkpoints, workdir

# Published pre-trained weights: AstroM3-CLIP (split seed 42) and
# AstroM3-CLIP-<seed> for the five release seeds.
_PUBLISHED = re.compile(r"AstroM3-CLIP(?:-(42|0|66|12|123))?(?![-\w])")


def data_of(source_config, source: str) -> tuple[str, int] | None:
    """(release, split seed) a source model was pre-trained on, if known."""
    dataset = source_config.get("dataset")
    if dataset:
        try:
            return names.release_of(dataset), names.split_seed_of(dataset)
        except ValueError:
            return None
    for text in (str(source), str(source_config.get("imported_from", ""))):
        m = _PUBLISHED.search(text)
        if m:
            return "hub", int(m.group(1) or 42)
    return None


def check_same_data(config, source_config, source: str) -> None:
    """Refuse a source pre-trained on another release or split seed.

    Fine-tuning on split seed S must start from a model pre-trained on the
    train split of the same release and seed S: any other pre-training saw
    some of this split's test objects, and would inflate its test accuracy.
    `config.allow_data_mismatch` lets such a source through.
    """
    if config.allow_data_mismatch:
        return
    want = names.release_of(config.dataset), names.split_seed_of(config.dataset)
    got = data_of(source_config, source)
    override = "If you are sure it is right, set --config.allow_data_mismatch=True."
    if got is None:
        raise errors.DataLeakError(
            f"cannot tell which data set {source} was pre-trained on, so it may have "
            f"seen the test objects of {config.dataset} (release {want[0]}, split "
            f"seed {want[1]}). {override}"
        )
    if got != want:
        raise errors.DataLeakError(
            f"{source} was pre-trained on release {got[0]} with split seed {got[1]}, "
            f"but this run uses {config.dataset} (release {want[0]}, split seed "
            f"{want[1]}): the pre-training saw objects that are in this run's test "
            f"split, which would inflate its test accuracy. Pre-train on the "
            f"{want[0]} release with seed {want[1]} (or use the published weights "
            f"of that seed). {override}"
        )


def load_source(config):
    """(source model, a description for the log) after the leak guard.

    `config.init_from` is a workdir this project wrote (a pre-training, or
    published weights imported with `python -m astrom3_jax.import_weights`),
    a folder of published weights or a Hugging Face Hub model id;
    `config.init_from_step` picks 'best' (default), 'latest' or a step
    number. Restoring does not depend on how many devices the source ran on.
    """
    source = config.init_from
    step = checkpoints.parse_step(config.init_from_step or "best")
    try:
        model, source_config = workdir.load_any(source, step=step)
    except FileNotFoundError as e:
        raise errors.ConfigError(f"config.init_from={source!r}: {e}") from e
    check_same_data(config, source_config, source)
    return model, f"{source} (step {step})"


def _same(a, b) -> bool:
    def norm(v):
        return list(v) if isinstance(v, list | tuple) else v

    return norm(a) == norm(b)


def _field(model_config, modality, field):
    return model_config[field] if modality is None else model_config[modality][field]


def adopt_architecture(config, source_config, defaults) -> list[str]:
    """Give `config.model` the encoder sizes of the model it starts from.

    The user sets the task, data and hyperparameters; the sizes come from
    `source_config` (the pre-training's recorded config, or the imported
    weights' model config). A size the user set explicitly (it differs from
    the preset's value in `defaults`) that contradicts the source is refused
    with the difference named. Changes `config` in place; returns the fields
    taken over (as 'model.photometry.d_model=128').
    """
    src, mine, preset = source_config.model, config.model, defaults.model
    # The registry says which fields fix an encoder's parameter shapes (the
    # attention kind and dtype do not: they may differ).
    wanted = [(m, f) for m in mine.modalities for f in modalities.entry(m).architecture]
    if len(mine.modalities) > 1:
        wanted.append((None, "embed_dim"))
    adopted, clashes = [], []
    for modality, field in wanted:
        if modality is not None and modality not in src:
            continue
        name = f"model.{field}" if modality is None else f"model.{modality}.{field}"
        theirs = _field(src, modality, field)
        ours, default = _field(mine, modality, field), _field(preset, modality, field)
        if _same(ours, theirs):
            continue
        if not _same(ours, default):
            clashes.append(f"{name}: you set {ours!r}, the source has {theirs!r}")
            continue
        value = tuple(theirs) if isinstance(theirs, list) else theirs
        (mine if modality is None else mine[modality])[field] = value
        adopted.append(f"{name}={value!r}")
    if clashes:
        raise errors.ConfigError(
            f"config.init_from={config.init_from!r} has another architecture than "
            "the sizes set for this run:\n  "
            + "\n  ".join(clashes)
            + "\nLeave the sizes out (they are taken from init_from) or start "
            "from a source of these sizes."
        )
    if "photometry" in mine.modalities and config.seq_len != mine.photometry.seq_len:
        if config.seq_len == defaults.seq_len:
            config.seq_len = mine.photometry.seq_len
            adopted.append(f"seq_len={config.seq_len}")
    return adopted


def source_config(config):
    """The recorded config of `config.init_from` (no weights are built).

    A missing or mistyped source fails here, before a run writes anything.
    """
    try:
        return workdir.load_any_config(config.init_from)
    except FileNotFoundError as e:
        raise errors.ConfigError(f"config.init_from={config.init_from!r}: {e}") from e


def take_architecture(config, *, say=None) -> list[str]:
    """The encoder sizes of `config.init_from`, in place (adopt_architecture
    against the config's preset); a missing or mistyped source fails here,
    before a run writes anything. `say(message)` reports what was taken;
    returns the names of the fields taken."""
    if not config.init_from:
        return []
    adopted = adopt_architecture(
        config, source_config(config), configs.preset_config(config)
    )
    if adopted and say is not None:
        say(f"sizes from {config.init_from}: {', '.join(adopted)}")
    return list(adopted)
