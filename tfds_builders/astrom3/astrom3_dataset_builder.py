"""TFDS's conventional module name for the astrom3 builder (a re-export)."""

from astrom3_jax.data.astrom3_tfds.astrom3_dataset_builder import (  # noqa: F401
    FAILED_REPORT_NAME,
    REPORT_NAME,
    Builder,
    BuildError,
    model_input_features,
)
