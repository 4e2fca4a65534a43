"""Modality registry: name -> (encoder factory, batch keys it reads).

The CLIP model, the classifiers, the loss and the trainer only iterate over
`config.modalities`; a fourth modality is one `register(...)` call plus a
sub-config `config.model.<name>`. Encoders expose `output_dim`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from astrom3_jax.models.metadata import MetadataMLP
from astrom3_jax.models.photometry import Informer
from astrom3_jax.models.spectra import GalSpecNet
from astrom3_jax.named_registry import NamedRegistry


@dataclasses.dataclass(frozen=True)
class Modality:
    """`build(sub_config, *, dtype, rngs)` returns an nnx.Module with
    `output_dim`, called as encoder(*[batch[k] for k in input_keys], rngs=)."""

    name: str
    build: Callable
    input_keys: tuple[str, ...]


_REGISTRY: NamedRegistry[Modality] = NamedRegistry("modality")
register = _REGISTRY.register
unregister = _REGISTRY.unregister
get = _REGISTRY.get
names = _REGISTRY.names


register(Modality("photometry", Informer, ("photometry", "photometry_mask")))
register(Modality("spectra", GalSpecNet, ("spectra",)))
register(Modality("metadata", MetadataMLP, ("metadata",)))
