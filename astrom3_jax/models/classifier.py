"""Classifiers: multimodal (fused normalised embeddings) and single-modality.

`MultimodalClassifier` puts a linear head on the fusion of the CLIP model's
embeddings; `Classifier` puts one on a single encoder's output.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from astrom3_jax.data import modalities
from astrom3_jax.models import inputs as model_inputs
from astrom3_jax.models import layers
from astrom3_jax.models.building import copy_params
from astrom3_jax.models.clip import (
    AstroM3,
    build_encoder,
    gather_inputs,
    l2_normalize,
)


def _merge(batch, inputs):
    merged = dict(batch or {})
    merged.update({k: v for k, v in inputs.items() if v is not None})
    return merged


def _classify(model, encoders, batch, keywords, rngs, seed, *, require_all=True):
    """Logits from a user's arrays (checked, compiled) or a traced batch.

    On concrete arrays (a user) the inputs are checked, padding rows made
    canonical and the forward pass runs compiled once per input shape
    (astrom3_jax.models.inputs); batch size 0 gives (0, num_classes) logits.
    Under a jax transformation (the trainer's jit) only the static shape
    checks run. Without `require_all`, modalities not given are filled in as
    absent (zeros flagged 0), which a fused classifier leaves out.
    """
    where = type(model).__name__
    if model_inputs.is_traced(batch, model.fc.kernel[...]):
        model_inputs.check_shapes(batch, model_inputs.model_specs(encoders), where)
        return model._forward(batch, rngs=rngs)
    arrays, size = model_inputs.prepare(
        batch, encoders, where, keywords=keywords, require_all=require_all
    )
    if size == 0:
        return jnp.zeros((0, model.fc.out_features), jnp.float32)
    for name in encoders:
        if name not in model_inputs.given_modalities(arrays, encoders):
            arrays.update(model_inputs.absent_inputs(encoders[name], name, size))
    rngs = model_inputs.sampling_rngs(model, rngs, seed)
    return model_inputs.run_compiled(model, "_forward", arrays, rngs)


class MultimodalClassifier(nnx.Module):
    """The full AstroM3 model (encoders, projections, temperatures, so a CLIP
    checkpoint loads whole), its L2-normalised embeddings fused by their mean
    (`fusion='avg'`, published) or their concatenation ('concat'), then
    Linear -> num_classes.

    Objects lacking a modality: per-object presence flags
    (`<modality>_present` batch keys, from the data pipeline or given by a
    user) leave the absent modalities out of the fusion (`fuse`). A user may
    also leave a modality out entirely: it is filled in as absent.
    """

    def __init__(self, model_config, *, rngs: nnx.Rngs):
        self.fusion = model_config.fusion
        if self.fusion not in ("avg", "concat"):
            raise ValueError(f"fusion must be 'avg' or 'concat', got {self.fusion!r}")
        self.clip = AstroM3(model_config, rngs=rngs)
        n = len(self.clip.modality_names) if self.fusion == "concat" else 1
        dtype = layers.compute_dtype(model_config.dtype)
        self.fc = layers.linear(
            n * model_config.embed_dim, model_config.num_classes, rngs=rngs, dtype=dtype
        )
        self.eval_seed = 0  # see AstroM3.eval_seed

    @property
    def modality_names(self):
        return self.clip.modality_names

    def embed(self, *, rngs=None, seed=None, **inputs) -> dict:
        """The embeddings of the CLIP part (deterministic, as __call__)."""
        rngs = model_inputs.sampling_rngs(self, rngs, seed)
        return self.clip.embed(rngs=rngs, **inputs)

    def __call__(self, batch=None, *, rngs=None, seed=None, **inputs):
        """Logits (B, num_classes); inputs as a batch dict and/or keywords.

        Deterministic by default (the model's evaluation key); `rngs=` or
        `seed=` draw another ProbSparse sample.
        """
        return _classify(
            self,
            self.clip.encoders,
            _merge(batch, inputs),
            tuple(inputs),
            rngs,
            seed,
            require_all=False,
        )

    def fuse(self, emb: dict, presence: dict | None = None):
        """The fused embedding the head reads (see the class docstring).

        `presence` ({modality: (B,) flags}) leaves out what an object lacks:
        'avg' is the mean of its present normalised embeddings, 'concat' puts
        zeros in the blocks of absent ones (the head then sees no evidence
        from them, the same input an absent modality always gives). Without
        flags everything is present.
        """
        names = self.clip.modality_names
        parts = [emb[n] for n in names]
        if presence:
            w = [
                presence[n].astype(jnp.float32)[:, None]
                if n in presence
                else jnp.ones((parts[0].shape[0], 1), jnp.float32)
                for n in names
            ]
            parts = [p * wi for p, wi in zip(parts, w, strict=True)]
            if self.fusion == "avg":
                return sum(parts[1:], parts[0]) / jnp.maximum(sum(w), 1.0)
            return jnp.concatenate(parts, axis=-1)
        if self.fusion == "avg":
            return sum(parts[1:], parts[0]) / len(parts)
        return jnp.concatenate(parts, axis=-1)

    def _presence(self, batch) -> dict:
        keys = {n: modalities.presence_key(n) for n in self.clip.modality_names}
        return {n: batch[k] for n, k in keys.items() if batch.get(k) is not None}

    def _forward(self, batch, *, rngs=None):
        emb = self.clip(batch, rngs=rngs)
        return self.fc(self.fuse(emb, self._presence(batch))).astype(jnp.float32)

    def predict_outputs(self, batch, *, rngs=None) -> dict:
        """Per-row outputs: each modality's embedding and the logits, from
        one forward pass (one key sample)."""
        emb = self.clip(batch, rngs=rngs)
        fused = self.fuse(emb, self._presence(batch))
        return {**emb, "logits": self.fc(fused).astype(jnp.float32)}


class Classifier(nnx.Module):
    """Single-modality classifier on `config.modalities[0]`: Linear on the raw
    encoder output (no projection). It needs its modality."""

    def __init__(self, model_config, *, rngs: nnx.Rngs):
        if len(model_config.modalities) != 1:
            raise ValueError("a single-modality classifier needs exactly one modality")
        self.modality = model_config.modalities[0]
        self.modality_names = (self.modality,)
        self.encoder = build_encoder(model_config, self.modality, rngs=rngs)
        dtype = layers.compute_dtype(model_config.dtype)
        self.fc = layers.linear(
            self.encoder.output_dim, model_config.num_classes, rngs=rngs, dtype=dtype
        )
        layers.set_dropout_impl(self, model_config)
        self.eval_seed = 0  # see AstroM3.eval_seed

    def __call__(self, batch=None, *, rngs=None, seed=None, **inputs):
        """Logits (B, num_classes); inputs as a batch dict and/or keywords.

        Deterministic by default (the model's evaluation key); `rngs=` or
        `seed=` draw another ProbSparse sample.
        """
        encoders = {self.modality: self.encoder}
        return _classify(
            self, encoders, _merge(batch, inputs), tuple(inputs), rngs, seed
        )

    def _forward(self, batch, *, rngs=None):
        x = self.encoder(*gather_inputs(batch, self.modality), rngs=rngs)
        return self.fc(x).astype(jnp.float32)

    def predict_outputs(self, batch, *, rngs=None) -> dict:
        """Per-row outputs: the L2-normalised encoder output (a single-modality
        classifier has no projection) and the logits, from one forward pass."""
        x = self.encoder(*gather_inputs(batch, self.modality), rngs=rngs)
        return {
            self.modality: l2_normalize(x),
            "logits": self.fc(x).astype(jnp.float32),
        }


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
