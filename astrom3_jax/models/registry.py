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


@dataclasses.dataclass(frozen=True)
class Modality:
    """`build(sub_config, *, dtype, rngs)` returns an nnx.Module with
    `output_dim`, called as encoder(*[batch[k] for k in input_keys], rngs=)."""

    name: str
    build: Callable
    input_keys: tuple[str, ...]


_REGISTRY: dict[str, Modality] = {}


def register(modality: Modality, *, overwrite: bool = False) -> Modality:
    if modality.name in _REGISTRY and not overwrite:
        raise ValueError(f"modality {modality.name!r} is already registered")
    _REGISTRY[modality.name] = modality
    return modality


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> Modality:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown modality {name!r}; registered: {sorted(_REGISTRY)}"
        ) from None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


register(Modality("photometry", Informer, ("photometry", "photometry_mask")))
register(Modality("spectra", GalSpecNet, ("spectra",)))
register(Modality("metadata", MetadataMLP, ("metadata",)))
