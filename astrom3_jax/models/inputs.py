"""Arrays at the API boundary: checked, made canonical, then run compiled.

`AstroM3.embed(...)` and the classifiers' `__call__` pass users' arrays
through `prepare`, then run the model with `run_compiled`; inside the
trainer's jit only the static `check_shapes` runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from astrom3_jax import errors
from astrom3_jax.data import modalities
from astrom3_jax.models import layers


class InputError(errors.UserError, ValueError):
    """An input array that the model cannot use as given (names the argument)."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """Expected shape after the batch axis; a dim is an int or an inclusive range."""

    dims: tuple

    def matches(self, shape) -> bool:
        if len(shape) != len(self.dims) + 1:
            return False
        for want, got in zip(self.dims, shape[1:], strict=True):
            ok = got == want if isinstance(want, int) else want[0] <= got <= want[1]
            if not ok:
                return False
        return True

    def describe(self) -> str:
        parts = ["B"] + [
            str(d) if isinstance(d, int) else f"{d[0]}..{d[1]}" for d in self.dims
        ]
        return "(" + ", ".join(parts) + ")"


# ----------------------------------------------------------- what models read


def encoder_specs(name: str, encoder) -> dict[str, Spec | None]:
    """{batch key: Spec} for one modality's encoder; None where unknown.

    The keys come from the modality's registry entry, the shapes from the
    encoder's `input_dims()` (an encoder without it is checked for a batch
    axis only).
    """
    keys = modalities.entry(name).batch_keys
    dims = getattr(encoder, "input_dims", None)
    if dims is None:
        return dict.fromkeys(keys)
    return {k: Spec(tuple(d)) for k, d in zip(keys, dims(), strict=True)}


def model_specs(encoders: Mapping) -> dict[str, Spec | None]:
    """{batch key: Spec} for every input of {modality name: encoder}."""
    out = {}
    for name, encoder in encoders.items():
        out.update(encoder_specs(name, encoder))
    return out


def known_keys() -> set[str]:
    """Every batch key some registered modality reads."""
    return {k for n in modalities.names() for k in modalities.entry(n).batch_keys}


# ---------------------------------------------------------------- shapes


def _shapes_text(arrays: Mapping) -> str:
    return ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in arrays.items())


def check_shapes(arrays: Mapping, specs: Mapping, where: str) -> int:
    """Static checks (fine under jit): presence, shapes, one batch size.

    Shapes are static, so this also runs under `jax.jit` (the trainer's
    path), where nothing that reads values can. Returns the batch size.
    """
    reads = ", ".join(specs)
    for key, spec in specs.items():
        if arrays.get(key) is None:
            want = f" {spec.describe()}" if spec else ""
            raise InputError(f"{where}: missing input {key}{want}; it reads {reads}")
    for key, spec in specs.items():
        shape = tuple(np.shape(arrays[key]))
        if spec is None:
            if len(shape) < 1:
                raise InputError(f"{where}: {key} needs a batch axis, got {shape}")
        elif not spec.matches(shape):
            raise InputError(
                f"{where}: {key} must have shape {spec.describe()}, got {shape}"
            )
    sizes = {int(np.shape(arrays[k])[0]) for k in specs}
    if len(sizes) > 1:
        raise InputError(
            f"{where}: inputs disagree on the batch size (first axis): "
            + _shapes_text({k: arrays[k] for k in specs})
        )
    return sizes.pop() if sizes else 0


def is_traced(arrays: Mapping, *params) -> bool:
    """True inside jax transformations (jit, shard_map, grad): values unknown.

    `params` are a few of the model's parameter values: a model merged
    inside a transformation holds tracers even when the inputs are constants.
    """
    values = [*arrays.values(), *params]
    return any(isinstance(v, jax.core.Tracer) for v in values)


# ---------------------------------------------------------------- values


def _as_float_array(key: str, value, where: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as e:  # e.g. ragged nested lists
        raise InputError(f"{where}: {key} is not an array: {e}") from e
    if array.dtype.kind not in "biuf":  # bool, signed, unsigned, float
        raise InputError(
            f"{where}: {key} must hold real numbers, got dtype {array.dtype}"
        )
    return array.astype(np.float32, copy=False)


def binary_mask(mask: np.ndarray, key: str = "photometry_mask", where="") -> np.ndarray:
    """1.0 where `mask` is non-zero, else 0.0; NaN is refused."""
    if np.isnan(mask).any():
        samples = np.unique(np.nonzero(np.isnan(mask))[0]).tolist()
        raise InputError(f"{where}: {key} holds NaN (samples {samples[:10]})")
    return (mask != 0).astype(np.float32)


def _refuse_non_finite(key: str, array: np.ndarray, where: str, rows=None) -> None:
    bad = ~np.isfinite(array)
    if rows is not None:  # only the real light-curve rows count
        bad &= rows[..., None]
    if bad.any():
        samples = np.unique(np.nonzero(bad)[0]).tolist()
        place = "real (mask 1) rows of " if rows is not None else ""
        raise InputError(
            f"{where}: {key} holds NaN or inf on {place}sample(s) {samples[:10]}"
            + (" ..." if len(samples) > 10 else "")
        )


def given_modalities(given: Mapping, encoders: Mapping) -> list[str]:
    """The modalities of `encoders` for which any input array was given."""
    return [
        n
        for n in encoders
        if any(given.get(k) is not None for k in modalities.entry(n).batch_keys)
    ]


def _presence(given, name, batch, where) -> np.ndarray | None:
    """The (B,) 0/1 presence flags the user gave for `name`, if any."""
    key = modalities.presence_key(name)
    if given.get(key) is None:
        return None
    flags = _as_float_array(key, given[key], where)
    if flags.shape != (batch,):
        raise InputError(
            f"{where}: {key} must have shape ({batch},), got {tuple(flags.shape)}"
        )
    return binary_mask(flags, key, where)


def prepare(
    given: Mapping,
    encoders: Mapping,
    where: str,
    *,
    keywords: tuple[str, ...] = (),
    require_all: bool = True,
) -> tuple[dict[str, np.ndarray], int]:
    """(the model's inputs, checked and canonical, as float32 NumPy; batch size).

    On concrete arrays only. It
    - names any input the model reads that is missing, and any keyword that
      no modality reads (a typo would otherwise be ignored);
    - checks each shape against what the model was built for and that all
      inputs share one batch size, naming the argument, the expected and the
      actual shape (instead of an XLA shape error, or embeddings of
      different lengths);
    - binarises `photometry_mask`: any non-zero value marks a real row, so
      0/1, 0/255 and boolean masks mean the same; a NaN in a mask is refused;
    - refuses NaN or inf in data the model reads (real light-curve rows,
      spectra, metadata), naming the argument and the samples;
    - rewrites the light curve's padding rows (mask 0) in canonical form.
    What each modality reads, and how its padding looks, comes from its
    entry in the modality registry (astrom3_jax/data/modalities.py); its
    shapes from its encoder's `input_dims()`.

    `given` maps batch keys to arrays (None = not given); `encoders` is the
    model's {modality name: encoder}; `keywords` are the names the user
    passed as keyword arguments: those must be keys some modality reads (or
    a modality's presence flags, `<modality>_present`). Keys a modality
    reads but this model does not are ignored.

    Modalities: with `require_all`, every encoder's inputs must be given;
    otherwise any non-empty subset, and the result holds only the given
    modalities' inputs. Presence flags (B,) mark per object which given
    modalities it has: rows flagged 0 may hold anything (NaN too), become
    zeros, and the flags travel in the result under their batch keys.
    """
    known = known_keys() | {modalities.presence_key(n) for n in modalities.names()}
    unknown = sorted(k for k in keywords if k not in known and given.get(k) is not None)
    specs = model_specs(encoders)
    if unknown:
        raise InputError(
            f"{where}: unexpected input(s) {unknown}; it reads {', '.join(specs)}"
        )
    names = list(encoders) if require_all else given_modalities(given, encoders)
    if not names:
        raise InputError(f"{where}: no input given; it reads {', '.join(specs)}")
    specs = model_specs({n: encoders[n] for n in names})
    arrays = {
        k: _as_float_array(k, given[k], where)
        for k in specs
        if given.get(k) is not None
    }
    batch = check_shapes(arrays, specs, where)
    for name in names:
        entry = modalities.entry(name)
        flags = _presence(given, name, batch, where)
        here = np.ones(batch, bool) if flags is None else flags != 0
        if flags is not None:
            arrays[modalities.presence_key(name)] = flags
            for key in entry.batch_keys:  # absent rows: zeros, whatever they held
                shape = (-1,) + (1,) * (arrays[key].ndim - 1)
                arrays[key] = np.where(here.reshape(shape), arrays[key], 0.0)
        mask_key = entry.row_mask_key
        if mask_key is not None:
            arrays[mask_key] = binary_mask(arrays[mask_key], mask_key, where)
            real = arrays[mask_key] != 0
        for key in entry.batch_keys:
            if key == mask_key:
                continue
            if mask_key is None:
                _refuse_non_finite(key, arrays[key], where)
                continue
            _refuse_non_finite(key, arrays[key], where, rows=real)
            # Canonical rather than ignored padding: the reference's ProbSparse
            # attention lets padded rows act as keys and values, so what they
            # hold changes the real rows' outputs (only the encoder output is
            # masked). The pipeline pads with zeros in the 3 light-curve
            # channels and repeats the object's 6 auxiliary values on every
            # row; `canonical_padding` writes exactly that, so any padding
            # content (NaN included) gives the pipeline's answer.
            if entry.canonical_padding is not None:
                arrays[key] = entry.canonical_padding(arrays[key], real)
    return arrays, batch


def absent_inputs(encoder, name: str, batch: int) -> dict[str, np.ndarray]:
    """Zero inputs of `batch` objects for modality `name`, flagged absent: what
    a fused classifier reads for a modality the user did not give."""
    entry = modalities.entry(name)
    out = {}
    for key, spec in encoder_specs(name, encoder).items():
        if spec is None:
            raise InputError(
                f"modality {name!r} was not given and its encoder does not "
                "describe its inputs (input_dims), so it cannot be left out"
            )
        dims = [d if isinstance(d, int) else d[0] for d in spec.dims]
        out[key] = np.zeros((batch, *dims), np.float32)
    out[modalities.presence_key(entry.name)] = np.zeros((batch,), np.float32)
    return out


# ----------------------------------------------------------- compiled runs


def sampling_rngs(model, rngs=None, seed=None) -> nnx.Rngs:
    """The rngs of a user-facing forward pass: `rngs` if given, else a fresh
    stream from `seed`, else the model's fixed evaluation key (so the same
    input always gives the same output)."""
    if rngs is not None:
        return rngs
    if seed is not None:
        return nnx.Rngs(sample=jax.random.key(seed))
    return nnx.Rngs(sample=layers.eval_key(getattr(model, "eval_seed", 0)))


@functools.partial(nnx.jit, static_argnames="method")
def _run(model, batch, rngs, method):
    return getattr(model, method)(batch, rngs=rngs)


def run_compiled(model: nnx.Module, method: str, batch: dict, rngs=None):
    """`model.<method>(batch, rngs=rngs)` compiled, once per structure and shapes.

    nnx.jit keys its cache on the model's structure (so train()/eval() or a
    different model compiles anew) and on the input shapes and dtypes, and
    writes changed state (rng counters) back to `model`. The program is
    compiled once and reused afterwards.
    """
    return _run(model, batch, rngs, method=method)
