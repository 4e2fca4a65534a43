"""`import tfds_builders.astrom3` registers `astrom3/<config>` with TFDS.

The builder itself lives in `astrom3_jax.data.astrom3_tfds`; this package
keeps TFDS's folder convention (builder module, README, dummy_data/).
"""

from astrom3_jax.data.astrom3_tfds.astrom3_dataset_builder import Builder

__all__ = ["Builder"]
