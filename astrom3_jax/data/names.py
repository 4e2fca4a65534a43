"""Data set config names: which names exist and what each one means.

Pure Python (no TFDS), so configs, the trainer and the command lines can
check and compare names without loading the builder, which makes one TFDS
config per name listed here.
"""

from __future__ import annotations

import dataclasses
import difflib

from astrom3_jax import errors
from astrom3_jax.data import schema

SYNTHETIC_PRESETS = ("small", "full", "sky", "bigsky")
# Bump whenever the synthetic generator's output changes for a given seed: its
# releases are cached under this version, and synthetic builds carry it as
# their TFDS version (1.<this>.0), so neither is silently reused. History:
# 2 = the instrument (cameras, V and g eras, limits, noise from real files)
# and distinct EW and RRc shapes; 3 = spectra no longer dimmed twice by
# extinction (their flux follows the observed V magnitude).
SYNTHETIC_GENERATOR_VERSION = "3"
# Presets with incomplete objects -> the modalities an object may lack. The
# other presets and the real release have every modality for every object.
OPTIONAL_MODALITIES = {
    "sky": ("spectra", "metadata"),
    "bigsky": ("spectra", "metadata"),
}
# A user's catalogue: every object needs a light curve; a spectrum and
# catalogue values are optional (most ASAS-SN variables have no spectrum).
CATALOG_OPTIONAL_MODALITIES = ("spectra", "metadata")
DERIVED_SUFFIX = "_derived"  # light-curve catalogue numbers measured, not read


class UnknownDatasetError(errors.UserError, ValueError):
    """A data set config name that does not exist (the message suggests one)."""


@dataclasses.dataclass(frozen=True)
class DatasetName:
    """What a config name means: release, subset and split seed.

    A name picks a raw release and one split folder of it:
    - `<subset>_<seed>` (e.g. `full_42`, `sub10_0`): the real release on the
      Hugging Face Hub, subset x split seed;
    - `synthetic_<preset>` (the full subset, seed 42) and
      `synthetic_<preset>_<subset>_<seed>`: the synthetic survey;
    - `catalog`: a table of the user's own stars pointing at raw files
      (astrom3_jax.data.catalog; read from the manual directory), release
      'catalog', subset 'full', split seed 42 (the split comes from the
      table's `split` column, or is drawn with that seed).

    Any of these with `_derived` appended (e.g. `synthetic_small_derived`)
    is the same data set with amplitude, period and lksl_statistic measured
    from each light curve and rfr_score set to the training mean
    (photometry_values.fill): what a model sees of new stars, which have no
    ASAS-SN catalogue entry. `predict` with such a model measures them too.
    """

    name: str
    subset: str = "full"
    split_seed: int = 42
    synthetic: str | None = None  # None: the real release; else a preset
    catalog: bool = False  # True: a user's catalogue table (the manual dir)
    derived_photometry: bool = False  # True: the `_derived` variant

    @property
    def release(self) -> str:
        """'hub', 'synthetic_<preset>' or 'catalog': which raw files it reads.

        Two configs of one release and one split seed share their test
        objects' complement: pre-training on one and testing on the other
        is leak-free.
        """
        if self.catalog:
            return "catalog"
        return "hub" if self.synthetic is None else f"synthetic_{self.synthetic}"

    @property
    def optional_modalities(self) -> tuple[str, ...]:
        """The modalities an object of this data set may lack (() if none).

        Such data sets store, for each of these modalities, whether an
        object has it (see tfds_builders/astrom3/README.md); every batch
        says it per row under `modalities.presence_key(name)`.
        """
        if self.catalog:
            return CATALOG_OPTIONAL_MODALITIES
        return OPTIONAL_MODALITIES.get(self.synthetic, ())


def all_names() -> list[DatasetName]:
    """Every config: the release's 20, then each synthetic preset's 21."""
    out = [
        DatasetName(f"{sub}_{seed}", sub, seed)
        for sub in schema.SUBSETS
        for seed in schema.SEEDS
    ]
    for preset in SYNTHETIC_PRESETS:
        out.append(DatasetName(f"synthetic_{preset}", synthetic=preset))
        out += [
            DatasetName(f"synthetic_{preset}_{sub}_{seed}", sub, seed, preset)
            for sub in schema.SUBSETS
            for seed in schema.SEEDS
        ]
    out.append(DatasetName("catalog", catalog=True))
    return out + [
        dataclasses.replace(n, name=n.name + DERIVED_SUFFIX, derived_photometry=True)
        for n in out
    ]


def derives_photometry(dataset: str, choice: bool | None = None) -> bool:
    """Whether to measure every light curve's catalogue numbers for a model
    trained on `dataset`: `choice` when given, else as its training data
    did (a `*_derived` data set)."""
    if choice is not None:
        return bool(choice)
    try:
        return parse(dataset).derived_photometry
    except UnknownDatasetError:
        return False


def config_names() -> list[str]:
    return [n.name for n in all_names()]


def suggestion(name: str, choices) -> str:
    """' (did you mean 'x'?)' for a close match, else ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse(name: str) -> DatasetName:
    """The meaning of config `name`; an unknown name raises with a suggestion."""
    for n in all_names():
        if n.name == name:
            return n
    raise UnknownDatasetError(
        f"unknown data set config {name!r}{suggestion(name, config_names())}. "
        "Names are <subset>_<seed> for the real release (subset in "
        f"{', '.join(schema.SUBSETS)}; seed in "
        f"{', '.join(map(str, schema.SEEDS))}), or synthetic_<preset> and "
        f"synthetic_<preset>_<subset>_<seed> (preset in "
        f"{', '.join(SYNTHETIC_PRESETS)}), or catalog (a table of your own "
        f"stars); any of them + {DERIVED_SUFFIX!r} measures the light-curve "
        "numbers from each light curve"
    )


def check(name: str) -> None:
    parse(name)


def is_synthetic(name: str) -> bool:
    return parse(name).synthetic is not None


def optional_modalities(name: str) -> tuple[str, ...]:
    return parse(name).optional_modalities


def release_of(name: str) -> str:
    return parse(name).release


def split_seed_of(name: str) -> int:
    return parse(name).split_seed


def subset_of(name: str) -> str:
    return parse(name).subset


def with_subset(name: str, subset: str) -> str:
    """The config of the same release and split seed with another subset.

    `with_subset("synthetic_small", "sub10")` -> "synthetic_small_sub10_42":
    the data set a model pre-trained on `name` may be fine-tuned on without
    leaking test objects.
    """
    n = parse(name)
    if n.catalog:
        if subset != "full":
            raise UnknownDatasetError(
                f"the {name!r} config has no subset {subset!r}: a catalogue is "
                "used whole (subset 'full')"
            )
        return n.name
    if n.synthetic is None:
        out = f"{subset}_{n.split_seed}"
    else:
        out = f"{n.release}_{subset}_{n.split_seed}"
    check(out)
    return out
