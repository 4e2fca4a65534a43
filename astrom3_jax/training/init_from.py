"""Loading the model a run starts from (`config.init_from`), with a leak guard.

`config.init_from` is a workdir this project wrote (pre-training, or
published weights imported with `python -m astrom3_jax.import_weights`), a
folder of published weights, or a Hugging Face Hub model id;
`config.init_from_step` picks 'best' (default), 'latest' or a step number.
Restoring does not depend on the number of devices the source ran on.

The guard: fine-tuning on split seed S must start from a model pre-trained
on the train split of the same release and seed S; any other pre-training
saw some of this split's test objects, so its test accuracy would be
inflated. Such a source is refused unless `config.allow_data_mismatch`.
"""

from __future__ import annotations

import re

from astrom3_jax import errors
from astrom3_jax.data import names

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
    """Refuse a source pre-trained on another release or split seed."""
    if config.get("allow_data_mismatch", False):
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


def _step(value):
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value or "best"


def load_source(config):
    """(source model, a description for the log) after the leak guard."""
    from astrom3_jax import api

    source = config.init_from
    step = _step(config.get("init_from_step", "best"))
    try:
        model, source_config = api.load_model(source, step=step)
    except FileNotFoundError as e:
        raise errors.ConfigError(f"config.init_from={source!r}: {e}") from e
    check_same_data(config, source_config, source)
    return model, f"{source} (step {step})"
