"""AstroM3: one encoder + linear projection per modality, L2-normalised.

Each unordered modality pair (a, b) has a learnable temperature s_ab
(init ln 100); the logit multiplier is clamp(exp(s_ab), 1, 100), as in the
reference. The contrastive loss itself lives in astrom3_jax/training/losses.py and
takes `model.scales()`.
"""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
from flax import nnx

from astrom3_jax.data import modalities
from astrom3_jax.models import layers


def pair_key(a: str, b: str) -> str:
    return f"{a}__{b}"


def gather_inputs(batch, name: str):
    """The arrays modality `name`'s encoder needs, failing loudly on a missing key."""
    keys = modalities.entry(name).batch_keys
    missing = [k for k in keys if batch.get(k) is None]
    if missing:
        raise KeyError(f"modality {name!r} needs inputs {missing}")
    return [jnp.asarray(batch[k]) for k in keys]


def l2_normalize(x):
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def build_encoder(model_config, name: str, *, rngs: nnx.Rngs):
    dtype = layers.compute_dtype(model_config.dtype)
    entry = modalities.entry(name)
    return entry.build_encoder(model_config[name], dtype=dtype, rngs=rngs)


class AstroM3(nnx.Module):
    """The multimodal CLIP model; modalities come from `config.modalities`."""

    def __init__(self, model_config, *, rngs: nnx.Rngs):
        dtype = layers.compute_dtype(model_config.dtype)
        self.modality_names = tuple(model_config.modalities)
        self.pairs = tuple(itertools.combinations(self.modality_names, 2))
        self.encoders = nnx.Dict(
            {n: build_encoder(model_config, n, rngs=rngs) for n in self.modality_names}
        )
        self.projections = nnx.Dict(
            {
                n: layers.linear(
                    self.encoders[n].output_dim,
                    model_config.embed_dim,
                    rngs=rngs,
                    dtype=dtype,
                )
                for n in self.modality_names
            }
        )
        self.temperatures = nnx.Dict(
            {
                pair_key(a, b): nnx.Param(jnp.asarray(math.log(100.0), jnp.float32))
                for a, b in self.pairs
            }
        )
        layers.set_dropout_impl(self, model_config)
        # The run's config.seed: the evaluation key rule (layers.eval_key).
        self.eval_seed = 0

    def _canonical(self, a: str, b: str) -> tuple[str, str]:
        if (a, b) in self.pairs:
            return a, b
        if (b, a) in self.pairs:
            return b, a
        raise KeyError(f"no modality pair ({a!r}, {b!r}); pairs are {self.pairs}")

    def logit_scale(self, a: str, b: str):
        """clamp(exp(s_ab), 1, 100), order-insensitive."""
        s = self.temperatures[pair_key(*self._canonical(a, b))][...]
        return jnp.clip(jnp.exp(s), 1.0, 100.0)

    def scales(self) -> dict[tuple[str, str], jnp.ndarray]:
        """{(a, b): logit_scale(a, b)} for every pair, as losses.clip_loss wants."""
        return {(a, b): self.logit_scale(a, b) for a, b in self.pairs}

    def encode(self, batch, *, rngs=None) -> dict:
        """Raw encoder outputs, before projection."""
        out = {}
        for name in self.modality_names:
            inputs = gather_inputs(batch, name)
            out[name] = self.encoders[name](*inputs, rngs=rngs)
        return out

    def __call__(self, batch, *, rngs=None) -> dict:
        """L2-normalised float32 embeddings (B, embed_dim) keyed by modality."""
        feats = self.encode(batch, rngs=rngs)
        return {n: l2_normalize(self.projections[n](f)) for n, f in feats.items()}

    def embed_given(self, batch, *, rngs=None) -> dict:
        """Embeddings of the modalities whose inputs `batch` holds; rows whose
        presence flag (`<modality>_present`) is 0 come back as NaN rows."""
        out = {}
        for name in self.modality_names:
            keys = modalities.entry(name).batch_keys
            if not all(batch.get(k) is not None for k in keys):
                continue
            x = self.encoders[name](*gather_inputs(batch, name), rngs=rngs)
            emb = l2_normalize(self.projections[name](x))
            flags = batch.get(modalities.presence_key(name))
            if flags is not None:
                emb = jnp.where(flags[:, None] > 0, emb, jnp.nan)
            out[name] = emb
        return out

    def predict_outputs(self, batch, *, rngs=None) -> dict:
        """Per-row outputs for the evaluation path: the embeddings."""
        return self(batch, rngs=rngs)

    def embed(
        self,
        photometry=None,
        photometry_mask=None,
        spectra=None,
        metadata=None,
        *,
        rngs=None,
        seed=None,
        **more,
    ) -> dict:
        """L2-normalised float32 embeddings (B, embed_dim) for NumPy/JAX arrays.

        The entry point for people holding arrays: the inputs are checked
        and padding rows made canonical (astrom3_jax.models.inputs; errors
        name the argument and the expected and actual shapes), then the
        forward pass runs compiled, once per input shape. Batch size 0
        gives (0, embed_dim) arrays. Under a jax transformation only the
        static shape checks run and inputs are used as given.

        Deterministic: every call draws the ProbSparse key sample from the
        model's evaluation key (that of its run's seed, as validation and
        export do), so the same input gives the same output. Pass
        `rngs=nnx.Rngs(sample=...)` or `seed=N` for another sample.
        """
        # Local: inputs imports astrom3_jax.models, which imports this module.
        from astrom3_jax.models import inputs

        given = dict(
            photometry=photometry,
            photometry_mask=photometry_mask,
            spectra=spectra,
            metadata=metadata,
            **more,
        )
        first = self.projections[self.modality_names[0]].kernel[...]
        if inputs.is_traced(given, first):
            names = inputs.given_modalities(given, self.encoders)
            specs = inputs.model_specs({n: self.encoders[n] for n in names})
            inputs.check_shapes(given, specs, "AstroM3.embed")
            return self.embed_given(given, rngs=inputs.sampling_rngs(self, rngs, seed))
        batch, size = inputs.prepare(
            given,
            self.encoders,
            "AstroM3.embed",
            keywords=tuple(given),
            require_all=False,
        )
        if size == 0:
            return {
                n: jnp.zeros((0, self.projections[n].out_features), jnp.float32)
                for n in inputs.given_modalities(batch, self.encoders)
            }
        return inputs.run_compiled(
            self, "embed_given", batch, inputs.sampling_rngs(self, rngs, seed)
        )

    def logits(self, embeddings: dict) -> dict:
        """{(a, b): scale_ab * emb_a @ emb_b.T} for every pair."""
        return {
            (a, b): self.logit_scale(a, b) * embeddings[a] @ embeddings[b].T
            for a, b in self.pairs
        }
