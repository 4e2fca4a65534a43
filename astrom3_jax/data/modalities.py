"""The modality registry: one entry per modality, everything about it.

The pipeline, the models, the input checks at the API boundary, the loss,
the trainer, the builder's stored features and a user's catalogue all read
this one table, so a fourth modality is one `register(Modality(...))` call
plus its encoder and its sub-config `config.model.<name>`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from astrom3_jax.data import schema
from astrom3_jax.data.named_registry import NamedRegistry

DEFAULT_MODALITIES = ("photometry", "spectra", "metadata")

PRESENT_SUFFIX = "_present"


def presence_key(name: str) -> str:
    """The batch key of modality `name`'s presence flags: float32 (B,), 1.0
    where the object has that modality, 0.0 where it is absent (its input
    arrays then hold fill values that no loss, metric or output may use)."""
    return f"{name}{PRESENT_SUFFIX}"


def is_presence_key(key: str) -> bool:
    return key.endswith(PRESENT_SUFFIX)


@dataclasses.dataclass(frozen=True)
class Ragged:
    """Variable-length rows: row i is values[starts[i] : starts[i] + lengths[i]].

    Rows may share one big `values` array (an in-memory copy of the whole
    split), so gathering a batch copies nothing.
    """

    values: np.ndarray  # (total_rows, ...)
    starts: np.ndarray  # (n,) int64
    lengths: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.starts)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.starts[i] : self.starts[i] + self.lengths[i]]

    def take(self, indices: np.ndarray) -> Ragged:
        return Ragged(self.values, self.starts[indices], self.lengths[indices])

    @classmethod
    def from_list(cls, rows: Sequence[np.ndarray], inner_shape, dtype) -> Ragged:
        lengths = np.array([len(r) for r in rows], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        flat = [np.asarray(r, dtype).reshape((-1, *inner_shape)) for r in rows]
        values = np.concatenate(flat) if flat else np.zeros((0, *inner_shape), dtype)
        return cls(values, starts, lengths)

    @classmethod
    def concatenate(cls, parts: Sequence[Ragged]) -> Ragged:
        """One Ragged with the rows of `parts`, in order, in a fresh values array."""
        rows = [p.row(i) for p in parts for i in range(len(p))]
        inner = parts[0].values.shape[1:]
        return cls.from_list(rows, inner, parts[0].values.dtype)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a transform may depend on besides the data.

    row_uniform: one U[0, 1) draw per real row, drawn for the GLOBAL batch so a
      row's randomness does not depend on how many processes share the batch.
    rng: a per-step generator for anything else (same caveat does not hold).
    """

    train: bool
    seq_len: int
    row_uniform: np.ndarray
    rng: np.random.Generator


@dataclasses.dataclass(frozen=True)
class StoredField:
    """One feature a built data set stores per object for a modality.

    shape is one object's; a leading None is a variable-length axis. Where
    a config's objects may lack the modality, its fixed-shape fields get a
    leading 0-or-1 axis and its variable-length ones are stored empty
    (astrom3_tfds/objects.store_optional). exact: float64 kept to the bit
    (TFDS's default Tensor encoding would round it to float32).
    builder_only: written by the builder beside the model's inputs (raw
    values kept for analysis), not in the schema toy builders share.
    """

    name: str
    shape: tuple
    dtype: str = "float32"
    exact: bool = False
    builder_only: bool = False

    @property
    def ragged(self) -> bool:
        return bool(self.shape) and self.shape[0] is None


# A transform's columns hold, for the real (non-padding) rows of one batch,
# either a stacked array (fixed-shape fields) or a `Ragged` (variable-length
# fields such as the light curve).
Transform = Callable[[Mapping[str, object], Context], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Modality:
    """One modality: its data, its batch transform and its encoder.

    An entry says what the modality reads from a stored example (`fields`),
    which batch keys its per-batch transform writes (`batch_keys`, in the
    order its encoder takes them), the transform itself, the encoder that
    embeds it (a class, or "module:Class" resolved on first use so that this
    data-layer module never imports Flax), and, for a light-curve-like
    input, which batch key is its row mask and how padding rows look:

        register(Modality("colour", fields=("metadata",), batch_keys=("colour",),
                          transform=my_transform, encoder=MyEncoder))

    An encoder is built as `encoder(sub_config, *, dtype, rngs)`, exposes
    `output_dim`, is called as `encoder(*[batch[k] for k in batch_keys],
    rngs=rngs)`, and may describe its inputs with `input_dims()` (one tuple
    of dims after the batch axis per batch key; a dim may be an inclusive
    (lo, hi) range), which the API boundary checks users' arrays against.
    """

    name: str
    fields: tuple[str, ...]  # stored example features read
    batch_keys: tuple[str, ...]  # keys added to the batch (the encoder's inputs)
    transform: Transform
    encoder: str | Callable | None = None  # class, or "module:Class"
    ragged_fields: tuple[str, ...] = ()  # subset of `fields` with variable length
    # A light curve's row mask (a batch key) and the function that writes its
    # padding rows as the pipeline does: (values, real rows) -> values.
    row_mask_key: str | None = None
    canonical_padding: Callable | None = None
    # The fine-tuning mode of a classifier on this modality alone
    # (`configs/finetune.py:<mode>,<subset>`); '' means the name itself.
    mode: str = ""
    # The fields of `config.model.<name>` that fix the encoder's parameter
    # shapes: a run starting from another model takes them over (init_from).
    architecture: tuple[str, ...] = ()
    # What a built data set stores for it (the builder's features come from
    # these); its fixed-shape fields, in order, say whether an object has it.
    stored: tuple[StoredField, ...] = ()
    # A user's catalogue: the numeric columns it reads, and the reader
    # (values by column, NaN where blank) -> its stored features, or None
    # when the row lacks it; a ValueError makes the row bad. The release's
    # three are read together by catalog_rows (one shared normalisation).
    catalog_columns: tuple[str, ...] = ()
    from_catalog: Callable[[Mapping[str, float]], dict | None] | None = None

    @property
    def mode_name(self) -> str:
        return self.mode or self.name

    def encoder_class(self):
        """The encoder class (imported on first use when given as a string)."""
        if self.encoder is None:
            raise ValueError(f"modality {self.name!r} has no encoder")
        if not isinstance(self.encoder, str):
            return self.encoder
        module, _, attr = self.encoder.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build_encoder(self, sub_config, *, dtype, rngs):
        return self.encoder_class()(sub_config, dtype=dtype, rngs=rngs)


_REGISTRY: NamedRegistry[Modality] = NamedRegistry("modality")
register = _REGISTRY.register
unregister = _REGISTRY.unregister
temporarily = _REGISTRY.temporarily


def entry(name: str) -> Modality:
    """The registered modality `name` (an unknown name lists the known ones)."""
    return _REGISTRY.get(name)


def get(names: Sequence[str]) -> list[Modality]:
    """The registered modalities for `names`, in the order given."""
    if isinstance(names, str):
        names = (names,)
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise KeyError(
            f"unknown modalities {unknown}; registered: {sorted(_REGISTRY.names())}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate modality in {names}")
    return [_REGISTRY.get(n) for n in names]


def names() -> list[str]:
    return list(_REGISTRY.names())


def stored_names() -> list[str]:
    """The registered modalities a built data set can store."""
    return [n for n in names() if _REGISTRY.get(n).stored]


def catalog_names() -> tuple[str, ...]:
    """The modalities a user's catalogue can give: the release's three and
    every registered one with a catalogue reader."""
    readers = [n for n in names() if _REGISTRY.get(n).from_catalog is not None]
    return (*DEFAULT_MODALITIES, *(n for n in readers if n not in DEFAULT_MODALITIES))


def catalog_readers() -> list[Modality]:
    """The registered modalities read from a catalogue by their own reader."""
    return [entry(n) for n in catalog_names() if n not in DEFAULT_MODALITIES]


# ---------------------------------------------------------------- photometry


def crop_starts(
    lengths: np.ndarray, seq_len: int, train: bool, u: np.ndarray
) -> np.ndarray:
    """Window starts: uniform in [0, N - seq_len] (train), else (N - seq_len) // 2."""
    room = np.maximum(lengths - seq_len, 0)
    if train:
        return np.minimum((u * (room + 1)).astype(np.int64), room)
    return room // 2


def crop_pad(curves: Ragged, aux: np.ndarray, starts: np.ndarray, seq_len: int):
    """Crops each curve to seq_len rows at `starts`, zero-pads at the end, tiles aux.

    Returns (photometry (n, seq_len, C + A), mask (n, seq_len)) float32; the aux
    values are on every row, padding rows included (as the reference does).
    """
    n = len(curves)
    n_chan = curves.values.shape[1]
    lengths = curves.lengths
    pos = np.arange(seq_len)
    valid = pos[None, :] < np.minimum(lengths, seq_len)[:, None]
    rows = curves.starts[:, None] + starts[:, None] + pos[None, :]
    values = curves.values
    if len(values) == 0:
        values = np.zeros((1, n_chan), np.float32)
    rows = np.where(valid, rows, 0)
    out = np.empty((n, seq_len, n_chan + aux.shape[1]), np.float32)
    out[..., :n_chan] = values[rows]
    out[..., :n_chan] *= valid[..., None]
    out[..., n_chan:] = aux[:, None, :]
    return out, valid.astype(np.float32)


def _photometry(cols, ctx: Context):
    curves = cols["photometry"]
    starts = crop_starts(curves.lengths, ctx.seq_len, ctx.train, ctx.row_uniform)
    phot, mask = crop_pad(
        curves, np.asarray(cols["photometry_aux"], np.float32), starts, ctx.seq_len
    )
    return {"photometry": phot, "photometry_mask": mask}


def _stacked(cols, ctx: Context, *, field: str, key: str):
    del ctx
    return {key: np.asarray(cols[field], np.float32)}


AUX_CHANNELS = 6  # per-object values the pipeline repeats on every light-curve row


def canonical_photometry(photometry: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Padding rows (`real` False) as `crop_pad` writes them, whatever they held.

    Light-curve channels become 0; the last AUX_CHANNELS channels take the
    values of the sample's first real row (0 when it has none). Padding
    matters: the reference's ProbSparse attention lets padded rows act as
    keys and values, so what they hold changes the real rows' outputs.
    """
    photometry = np.asarray(photometry, np.float32)
    real = np.asarray(real) != 0
    channels = photometry.shape[-1]
    n_aux = AUX_CHANNELS if channels > AUX_CHANNELS else 0
    first_real = real.argmax(axis=1)
    filler = np.zeros((photometry.shape[0], channels), np.float32)
    if n_aux:
        aux = photometry[np.arange(len(photometry)), first_real, channels - n_aux :]
        filler[:, channels - n_aux :] = np.where(real.any(axis=1)[:, None], aux, 0)
    return np.where(real[..., None], photometry, filler[:, None, :])


# The raw (un-normalised) light-curve and spectrum scalars the builder keeps.
RAW_FIELDS = tuple(
    StoredField(k, (), "float64", exact=True, builder_only=True)
    for k in schema.RAW_SCALARS
)

register(
    Modality(
        name="photometry",
        fields=("photometry", "photometry_aux"),
        batch_keys=("photometry", "photometry_mask"),
        transform=_photometry,
        encoder="astrom3_jax.models.photometry:Informer",
        ragged_fields=("photometry",),
        row_mask_key="photometry_mask",
        canonical_padding=canonical_photometry,
        mode="photo",
        stored=(
            StoredField("photometry", (None, 3)),
            StoredField("photometry_aux", (len(schema.PHOTOMETRY_AUX),)),
            *RAW_FIELDS[:4],
        ),
        architecture=(
            "seq_len",
            "in_channels",
            "d_model",
            "n_heads",
            "d_ff",
            "n_layers",
            "activation",
            "probsparse_factor",
            "reference_reshape",
        ),  # fmt: skip
    )
)
register(
    Modality(
        name="spectra",
        fields=("spectra",),
        batch_keys=("spectra",),
        transform=functools.partial(_stacked, field="spectra", key="spectra"),
        encoder="astrom3_jax.models.spectra:GalSpecNet",
        stored=(StoredField("spectra", (3, schema.SPECTRUM_LENGTH)), *RAW_FIELDS[4:]),
        architecture=("conv_channels", "kernel_size", "pool_size", "length"),
    )
)
register(
    Modality(
        name="metadata",
        fields=("metadata",),
        batch_keys=("metadata",),
        transform=functools.partial(_stacked, field="metadata", key="metadata"),
        encoder="astrom3_jax.models.metadata:MetadataMLP",
        mode="meta",
        stored=(StoredField("metadata", (len(schema.META_COLS),)),),
        architecture=("input_dim", "hidden_dim"),
    )
)
