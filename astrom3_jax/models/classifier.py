"""Classifiers: multimodal (fused normalised embeddings) and single-modality.

Multimodal: the full AstroM3 model (encoders, projections, temperatures, so
a CLIP checkpoint loads whole), fused by the mean ('avg', published) or the
concatenation of the L2-normalised embeddings, then Linear -> num_classes.
Single-modality: Linear on the raw encoder output (no projection).

Called on concrete arrays (a user), the inputs are checked, padding rows
made canonical and the forward pass runs compiled once per input shape
(astrom3_jax.models.inputs); batch size 0 gives (0, num_classes) logits.
Called under a jax transformation (the trainer's jit), only the static
shape checks run.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from astrom3_jax.models import inputs as model_inputs
from astrom3_jax.models import layers
from astrom3_jax.models.building import copy_params
from astrom3_jax.models.clip import AstroM3, build_encoder, gather_inputs


def _merge(batch, inputs):
    merged = dict(batch or {})
    merged.update({k: v for k, v in inputs.items() if v is not None})
    return merged


def _classify(model, encoders, batch, keywords, rngs):
    """Logits from a user's arrays (checked, compiled) or a traced batch."""
    where = type(model).__name__
    if model_inputs.is_traced(batch, model.fc.kernel[...]):
        model_inputs.check_shapes(batch, model_inputs.model_specs(encoders), where)
        return model._forward(batch, rngs=rngs)
    arrays, size = model_inputs.prepare(batch, encoders, where, keywords=keywords)
    if size == 0:
        return jnp.zeros((0, model.fc.out_features), jnp.float32)
    return model_inputs.run_compiled(model, "_forward", arrays, rngs)


class MultimodalClassifier(nnx.Module):
    def __init__(self, model_config, *, rngs: nnx.Rngs):
        self.fusion = model_config.get("fusion", "avg")
        if self.fusion not in ("avg", "concat"):
            raise ValueError(f"fusion must be 'avg' or 'concat', got {self.fusion!r}")
        self.clip = AstroM3(model_config, rngs=rngs)
        n = len(self.clip.modality_names) if self.fusion == "concat" else 1
        dtype = layers.compute_dtype(model_config.get("dtype", "float32"))
        self.fc = layers.linear(
            n * model_config.embed_dim, model_config.num_classes, rngs=rngs, dtype=dtype
        )

    @property
    def modality_names(self):
        return self.clip.modality_names

    def embed(self, **inputs) -> dict:
        return self.clip.embed(**inputs)

    def __call__(self, batch=None, *, rngs=None, **inputs):
        """Logits (B, num_classes); inputs as a batch dict and/or keywords."""
        return _classify(
            self, self.clip.encoders, _merge(batch, inputs), tuple(inputs), rngs
        )

    def _forward(self, batch, *, rngs=None):
        emb = self.clip(batch, rngs=rngs)
        parts = [emb[n] for n in self.clip.modality_names]
        if self.fusion == "avg":
            fused = sum(parts[1:], parts[0]) / len(parts)
        else:
            fused = jnp.concatenate(parts, axis=-1)
        return self.fc(fused).astype(jnp.float32)


class Classifier(nnx.Module):
    """Single-modality classifier on `config.modalities[0]`."""

    def __init__(self, model_config, *, rngs: nnx.Rngs):
        if len(model_config.modalities) != 1:
            raise ValueError("a single-modality classifier needs exactly one modality")
        self.modality = model_config.modalities[0]
        self.modality_names = (self.modality,)
        self.encoder = build_encoder(model_config, self.modality, rngs=rngs)
        dtype = layers.compute_dtype(model_config.get("dtype", "float32"))
        self.fc = layers.linear(
            self.encoder.output_dim, model_config.num_classes, rngs=rngs, dtype=dtype
        )
        layers.set_dropout_impl(self, model_config)

    def __call__(self, batch=None, *, rngs=None, **inputs):
        """Logits (B, num_classes); inputs as a batch dict and/or keywords."""
        encoders = {self.modality: self.encoder}
        return _classify(self, encoders, _merge(batch, inputs), tuple(inputs), rngs)

    def _forward(self, batch, *, rngs=None):
        x = self.encoder(*gather_inputs(batch, self.modality), rngs=rngs)
        return self.fc(x).astype(jnp.float32)


def init_from_clip(classifier, clip: AstroM3) -> None:
    """Start fine-tuning from pre-training, in place, as the reference does.

    A single-modality classifier takes that modality's encoder only (head
    stays new); the multimodal one takes encoders, projections and
    temperatures.
    """
    if isinstance(classifier, MultimodalClassifier):
        copy_params(classifier.clip, clip, "CLIP model")
    else:
        name = classifier.modality
        copy_params(classifier.encoder, clip.encoders[name], f"{name} encoder")
