"""A throwaway TFDS data set of examples given in Python, for tests and benchmarks.

It has the astrom3 builder's pipeline-facing features, so whatever reads the
real data set (decoders, grain loaders) can be run on hand-made or random
examples without the raw release.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import tensorflow_datasets as tfds

from astrom3_jax.data.astrom3_tfds import features as stored_features
from astrom3_jax.data.astrom3_tfds import objects


class ModelInputExamples(tfds.core.GeneratorBasedBuilder):
    """One 'train' split holding `examples` (dicts of model-input features).

    optional_modalities: those an example may lack, stored as the astrom3
    builder stores them (objects.store_optional): an example leaves out (or
    gives None for) the fields of a modality it lacks.
    """

    VERSION = tfds.core.Version("1.0.0")

    def __init__(
        self,
        *,
        examples: Iterable[dict],
        optional_modalities: Sequence[str] = (),
        **kwargs,
    ):
        self._examples = examples
        self._optional = tuple(optional_modalities)
        super().__init__(file_format="array_record", **kwargs)

    def _info(self):
        features = stored_features.model_input_features(self._optional)
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict(features)
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, example in enumerate(self._examples):
            if self._optional:
                example = {k: v for k, v in example.items() if v is not None}
                example = objects.store_optional(
                    example, self._optional, stored=self.info.features.keys()
                )
            yield i, example


def examples_source(
    examples: Iterable[dict], data_dir: str, optional_modalities: Sequence[str] = ()
):
    """Write `examples` under data_dir and return the split's data source."""
    builder = ModelInputExamples(
        examples=examples, data_dir=data_dir, optional_modalities=optional_modalities
    )
    builder.download_and_prepare()
    return builder.as_data_source("train")
