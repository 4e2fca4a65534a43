"""AstroM3 models in Flax NNX: encoders, the CLIP model and classifiers.

`build_model(config.model, rngs)` builds what `config.model.task` asks for:
'clip' -> AstroM3; 'classification' -> MultimodalClassifier (several
modalities) or Classifier (one modality).
"""

from __future__ import annotations

from flax import nnx

from astrom3_jax.models.building import (
    build_for_restore,
    copy_params,
    init_model,
    set_eval_seed,
)
from astrom3_jax.models.classifier import (
    Classifier,
    MultimodalClassifier,
    init_from_clip,
)
from astrom3_jax.models.clip import AstroM3
from astrom3_jax.models.config import paper_model_config, small_model_config
from astrom3_jax.models.layers import eval_key
from astrom3_jax.models.metadata import MetadataMLP
from astrom3_jax.models.photometry import Informer
from astrom3_jax.models.spectra import GalSpecNet

__all__ = [
    "AstroM3",
    "Classifier",
    "GalSpecNet",
    "Informer",
    "MetadataMLP",
    "MultimodalClassifier",
    "build_classifier",
    "build_clip_model",
    "build_for_restore",
    "build_model",
    "copy_params",
    "eval_key",
    "init_from_clip",
    "init_model",
    "paper_model_config",
    "set_eval_seed",
    "small_model_config",
]


def build_clip_model(model_config, rngs: nnx.Rngs) -> AstroM3:
    return AstroM3(model_config, rngs=rngs)


def build_classifier(model_config, rngs: nnx.Rngs):
    """MultimodalClassifier for several modalities, Classifier for one."""
    if len(model_config.modalities) == 1:
        return Classifier(model_config, rngs=rngs)
    return MultimodalClassifier(model_config, rngs=rngs)


def build_model(model_config, rngs: nnx.Rngs):
    task = model_config.task
    if task == "clip":
        return build_clip_model(model_config, rngs)
    if task == "classification":
        return build_classifier(model_config, rngs)
    raise ValueError(
        f"config.model.task must be 'clip' or 'classification', got {task!r}"
    )
