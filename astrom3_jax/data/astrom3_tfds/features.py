"""What the astrom3 builder stores: one config per data set name, the manual
download instructions, and the feature schema the input pipeline reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from astrom3_jax.data import modalities, names, schema
from astrom3_jax.data.astrom3_tfds import objects

MANUAL = """\
Put a copy of the Hub release (https://huggingface.co/datasets/AstroMLCore/AstroM3Dataset)
in the manual directory (`--manual_dir DIR`, or <data_dir>/downloads/manual/):
  DIR/photometry.zip                       (members vardb_files/<name>.dat)
  DIR/spectra/<CLASS>/<spec_filename>      (LAMOST FITS, .fits or .fits.gz)
  DIR/splits/<sub>/<seed>/{train,val,test}.csv and info.json
e.g. `hf download AstroMLCore/AstroM3Dataset --repo-type dataset --include
'photometry.zip' 'splits/<sub>/<seed>/*' 'spectra/*' --local-dir DIR`. Only
the split folder of the chosen config (and the spectra it lists) is read.
"""


MANUAL_CATALOG = """\
The catalog config builds the data set from a table of your own stars:
  DIR/catalog.csv (or .ecsv, .fits, .vot, .xml): one row per object with
  id, label (optional), lightcurve, spectrum (file paths, relative to DIR)
  and the catalogue columns by their release names; split (optional:
  train / validation / test; else drawn with seed 42, stratified by label).
See astrom3_jax.data.catalog for the format. Every row needs a light curve;
a spectrum and the catalogue values are optional.
"""


@dataclasses.dataclass(eq=False)
class Astrom3Config(tfds.core.BuilderConfig):
    """One split folder of a release: subset x seed, or a synthetic release."""

    subset: str = "full"
    split_seed: int = 42
    synthetic: str | None = None  # None (real data) or a generate_release preset
    synthetic_seed: int = 0
    catalog: bool = False  # a user's table in the manual dir (data/catalog.py)
    # Modalities an object may lack: their fields are stored with a leading
    # 0-or-1 axis (objects.optional_fields). () for the release and the
    # complete synthetic presets, whose stored features stay as they were.
    optional_modalities: tuple[str, ...] = ()
    # amplitude, period, lksl_statistic measured from each light curve,
    # rfr_score the training mean (data/photometry_values.py)
    derived_photometry: bool = False


def all_configs():
    """One TFDS config per data set name (astrom3_jax.data.names)."""
    out = []
    for n in names.all_names():
        if n.catalog:
            about = (
                "A table of your own stars (manual_dir/catalog.csv, .ecsv, "
                ".fits or .vot) pointing at raw files; see "
                "astrom3_jax.data.catalog. Objects may lack "
                f"{' or '.join(n.optional_modalities)} (stored with a leading "
                "0-or-1 axis)."
            )
        elif n.synthetic is None:
            about = f"Real release, subset {n.subset}, split seed {n.split_seed}."
        else:
            about = (
                f"Synthetic release (preset {n.synthetic!r}), subset {n.subset}, "
                f"split seed {n.split_seed}, with ground truth (true_target, "
                "subtype) and an `unseen` split."
            )
            if n.optional_modalities:
                about += (
                    f" Objects may lack {' or '.join(n.optional_modalities)} "
                    "(stored with a leading 0-or-1 axis)."
                )
        out.append(
            Astrom3Config(
                name=n.name,
                subset=n.subset,
                split_seed=n.split_seed,
                synthetic=n.synthetic,
                catalog=n.catalog,
                description=about,
                optional_modalities=n.optional_modalities,
                derived_photometry=n.derived_photometry,
                # A synthetic build made by another generator is another version.
                version=(
                    None
                    if n.synthetic is None
                    else f"1.{names.SYNTHETIC_GENERATOR_VERSION}.0"
                ),
            )
        )
    return out


def optional_shape(name: str, optional: tuple[str, ...]) -> tuple:
    """A field's stored shape: with a leading 0-or-1 axis if its modality is
    optional in the config (objects.optional_fields)."""
    shape = tuple(objects.stored_field(name).shape)
    if any(name in objects.optional_fields(m) for m in optional):
        return (None, *shape)
    return shape


def stored_modalities(catalog: bool = False) -> tuple[str, ...]:
    """The modalities a build stores: the release's three, and for a user's
    catalogue every registered one it can give (modalities.catalog_names)."""
    if catalog:
        return modalities.catalog_names()
    return modalities.DEFAULT_MODALITIES


def _tensor(field: modalities.StoredField, optional: tuple[str, ...]):
    f = tfds.features
    kw = {"encoding": f.Encoding.BYTES} if field.exact else {}
    dtype = np.dtype(field.dtype).type
    return f.Tensor(shape=optional_shape(field.name, optional), dtype=dtype, **kw)


def modality_features(
    names: Sequence[str], optional: tuple[str, ...], builder_only: bool
) -> dict:
    """The stored features of modalities `names`, from their registry
    entries: the model's inputs, or (builder_only) the builder's extras."""
    return {
        field.name: _tensor(field, optional)
        for m in modalities.get(names)
        for field in m.stored
        if field.builder_only == builder_only
    }


def model_input_features(
    optional_modalities: tuple[str, ...] = (),
    names: Sequence[str] = modalities.DEFAULT_MODALITIES,
) -> dict:
    """The stored features the input pipeline reads (the public schema).

    Shared with toy builders in tests and benchmarks, so they cannot drift
    from what this builder writes. `optional_modalities`: those an object
    may lack, whose fields get a leading 0-or-1 axis. `names`: the
    modalities stored (stored_modalities).
    """
    objects.check_optional(optional_modalities)
    f = tfds.features
    opt = tuple(optional_modalities)
    return {
        "id": f.Text(doc="Gaia EDR3 id"),
        "name": f.Text(doc="ASAS-SN name"),
        **modality_features(names, opt, builder_only=False),
        "label": f.ClassLabel(names=list(schema.CLASSES)),
    }
