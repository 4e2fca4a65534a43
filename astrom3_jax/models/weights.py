"""The authors' PyTorch weights <-> our NNX models, both directions.

Reads and writes Hub-layout folders (`config.json` + `model.safetensors`,
PyTorch state-dict names and layouts) with the safetensors NumPy API, so no
PyTorch is needed.
"""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from astrom3_jax import errors, models
from astrom3_jax.data import hub
from astrom3_jax.models.photometry import position_table
from astrom3_jax.models.weight_layouts import (
    LAYOUTS,
    PREFIX,
    SINGLE_KIND,
    layout_entries,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PE_MAX_LEN = 5000  # rows of the reference's saved position buffer
KINDS = ("clip", "all", "photo", "spectra", "meta")


class WeightsError(errors.UserError, ValueError):
    """A checkpoint that does not fit the model (names the tensor and file)."""


class SourceNotFoundError(errors.UserError, FileNotFoundError):
    """No published-weights folder, or no Hub model, of that name."""


class DownloadError(errors.UserError, ConnectionError):
    """A Hub download that failed (network, server)."""


# --------------------------------------------------------------------------
# configs


def detect_kind(ref: dict) -> str:
    """Which of the five published model kinds a reference config.json is."""
    if "p_d_model" in ref:
        return "all" if ref.get("classification") else "clip"
    if "d_model" in ref:
        return "photo"
    if "conv_channels" in ref:
        return "spectra"
    if "input_dim" in ref:
        return "meta"
    raise WeightsError(f"not an AstroM3 reference config: keys {sorted(ref)}")


def _need(ref, key):
    if key not in ref:
        raise WeightsError(f"config.json lacks {key!r}")
    return ref[key]


def model_config_from_reference(ref: dict) -> tuple[ml_collections.ConfigDict, str]:
    """Our `config.model` (reference-compatible mode) and the model kind.

    Imported models use the reference-compatible mode: ProbSparse attention
    with the reference's head/position reshape, embedding dropout 0.1,
    LayerNorm eps 1e-5, exact GELU.
    """
    kind = detect_kind(ref)
    c = models.paper_model_config()
    c.num_classes = int(ref.get("num_classes", 10))
    c.fusion = ref.get("fusion", "avg")
    multi = kind in ("clip", "all")

    def get(modality, key):
        return _need(ref, (PREFIX[modality] if multi else "") + key)

    if multi or kind == "photo":
        act = get("photometry", "activation")
        if act not in ("gelu", "relu"):
            raise WeightsError(f"unsupported Informer activation {act!r}")
        c.photometry.update(
            seq_len=int(_need(ref, "seq_len")),
            in_channels=int(get("photometry", "enc_in")),
            d_model=int(get("photometry", "d_model")),
            n_heads=int(get("photometry", "n_heads")),
            d_ff=int(get("photometry", "d_ff")),
            n_layers=int(get("photometry", "e_layers")),
            dropout=float(get("photometry", "dropout")),
            probsparse_factor=int(get("photometry", "factor")),
            activation=act,
            embed_dropout=0.1,
            attention="probsparse",
            reference_reshape=True,
        )
    if multi or kind == "spectra":
        c.spectra.update(
            conv_channels=tuple(int(x) for x in get("spectra", "conv_channels")),
            kernel_size=int(get("spectra", "kernel_size")),
            pool_size=int(get("spectra", "mp_kernel_size")),
            dropout=float(ref["s_dropout"] if multi else _need(ref, "dropout_rate")),
        )
    if multi or kind == "meta":
        c.metadata.update(
            input_dim=int(get("metadata", "input_dim")),
            hidden_dim=int(get("metadata", "hidden_dim")),
            dropout=float(get("metadata", "dropout")),
        )
    if multi:
        c.embed_dim = int(_need(ref, "hidden_dim"))
        c.task = "classification" if kind == "all" else "clip"
    else:
        c.task = "classification"
        c.modalities = (SINGLE_KIND[kind],)
    return c, kind


def model_kind(model_config) -> str:
    """The reference kind our `config.model` corresponds to."""
    mods = tuple(model_config.modalities)
    if model_config.task == "clip":
        kind = "clip"
    elif len(mods) == 1:
        kind = {v: k for k, v in SINGLE_KIND.items()}[mods[0]]
    else:
        kind = "all"
    if len(mods) > 1 and set(mods) != {"photometry", "spectra", "metadata"}:
        raise WeightsError(f"the reference format has no model with modalities {mods}")
    return kind


def reference_config(model_config) -> dict:
    """The reference's config.json for our `config.model`."""
    kind = model_kind(model_config)
    multi = kind in ("clip", "all")
    out = {"classification": kind != "clip", "num_classes": model_config.num_classes}
    if multi:
        out.update(hidden_dim=model_config.embed_dim, fusion=model_config.fusion)
    pre = (lambda m: PREFIX[m]) if multi else (lambda m: "")
    if multi or kind == "photo":
        p = model_config.photometry
        if (
            p.attention != "probsparse"
            or not p.reference_reshape
            or (p.get("embed_dropout", 0.1) != 0.1)
        ):
            raise WeightsError(
                "only the reference-compatible photometry encoder (probsparse, "
                "reference_reshape, embed_dropout 0.1) exists in the reference format"
            )
        out["seq_len"] = p.seq_len
        q = pre("photometry")
        out.update(
            {
                f"{q}enc_in": p.in_channels,
                f"{q}d_model": p.d_model,
                f"{q}dropout": p.dropout,
                f"{q}factor": p.probsparse_factor,
                f"{q}output_attention": False,
                f"{q}n_heads": p.n_heads,
                f"{q}d_ff": p.d_ff,
                f"{q}activation": p.get("activation", "gelu"),
                f"{q}e_layers": p.n_layers,
            }
        )
    if multi or kind == "spectra":
        s, q = model_config.spectra, pre("spectra")
        out[f"{q}dropout" if multi else "dropout_rate"] = s.dropout
        out.update(
            {
                f"{q}conv_channels": list(s.conv_channels),
                f"{q}kernel_size": s.kernel_size,
                f"{q}mp_kernel_size": s.pool_size,
            }
        )
    if multi or kind == "meta":
        m, q = model_config.metadata, pre("metadata")
        out.update(
            {
                f"{q}input_dim": m.input_dim,
                f"{q}hidden_dim": m.hidden_dim,
                f"{q}dropout": m.dropout,
            }
        )
    return out


# --------------------------------------------------------------------------
# tensors


def _variable(model, path):
    obj = model
    for p in path:
        obj = obj[p] if isinstance(obj, nnx.List | nnx.Dict) else getattr(obj, p)
    return obj


def _check_covers_params(model, entries):
    ours = {tuple(p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    mapped = {e.path for e in entries}
    if ours != mapped:
        raise WeightsError(
            f"weight layout out of date: unmapped params {sorted(ours - mapped)}, "
            f"mapped non-params {sorted(mapped - ours)}"
        )


def _check_position_table(name, pe, d_model, origin):
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != d_model:
        raise WeightsError(
            f"{origin}: {name}: shape {pe.shape}, expected (1, N, {d_model})"
        )
    ours = position_table(pe.shape[1], d_model)
    # float32 sin(position * freq) of two libraries differ by ~1e-4 at row
    # 5000 (~4e-6 in the first 200 rows); a layout error would be O(1).
    err = float(np.max(np.abs(pe[0] - ours)))
    if err > 1e-3:
        raise WeightsError(
            f"{origin}: {name}: differs from our sinusoidal table by {err:.3g}"
        )


def _check_finite(tensors: dict, origin: str) -> None:
    """Refuse NaN or inf anywhere: they would only surface as NaN outputs."""
    for name in sorted(tensors):
        value = np.asarray(tensors[name])
        if not np.issubdtype(value.dtype, np.floating):
            continue
        n_nan = int(np.isnan(value).sum())
        n_inf = int(np.isinf(value).sum())
        if n_nan or n_inf:
            raise WeightsError(
                f"{origin}: tensor {name!r} {tuple(value.shape)} holds "
                f"{n_nan} NaN and {n_inf} infinite value(s)"
            )


def load_reference_tensors(
    model, model_config, kind, tensors: dict, *, origin: str = "checkpoint"
) -> list[str]:
    """Copy reference tensors into `model` in place; returns ignored names.

    Every source tensor is mapped (`layout_entries`) or is a buffer that we
    recompute: the position table `pe` is checked against ours instead of
    loaded. Missing tensors, unexpected tensors, shape mismatches and
    non-finite values raise `WeightsError` with the tensor's name; `origin`
    (e.g. the file's path) prefixes every error message. Unreadable files
    raise with the file's name (`read_tensors`).
    """
    entries, buffers = layout_entries(kind, model_config)
    _check_covers_params(model, entries)
    names = {e.torch_name for e in entries}
    missing = sorted((names | set(buffers)) - set(tensors))
    if missing:
        raise WeightsError(f"{origin}: missing tensors {missing}")
    unexpected = sorted(set(tensors) - names - set(buffers))
    if unexpected:
        raise WeightsError(f"{origin}: unexpected tensors {unexpected}")
    _check_finite(tensors, origin)
    for name in buffers:
        d_model = model_config.photometry.d_model
        _check_position_table(name, tensors[name], d_model, origin)
    for e in entries:
        var = _variable(model, e.path)
        value = LAYOUTS[e.layout][0](np.asarray(tensors[e.torch_name], np.float32))
        if value.shape != var[...].shape:
            raise WeightsError(
                f"{origin}: {e.torch_name}: shape {tensors[e.torch_name].shape} "
                f"does not fit our {'.'.join(map(str, e.path))} "
                f"{var[...].shape} ({e.layout})"
            )
        var.set_value(jnp.asarray(value))
    return sorted(buffers)


def reference_tensors(model, model_config) -> dict[str, np.ndarray]:
    """Our model as a PyTorch-layout state dict (NumPy)."""
    kind = model_kind(model_config)
    entries, buffers = layout_entries(kind, model_config)
    _check_covers_params(model, entries)
    out = {}
    for e in entries:
        value = np.asarray(_variable(model, e.path)[...], np.float32)
        out[e.torch_name] = LAYOUTS[e.layout][1](value)
    for name in buffers:
        d = model_config.photometry.d_model
        out[name] = position_table(PE_MAX_LEN, d)[None]
    return out


# --------------------------------------------------------------------------
# folders and the Hub


def import_reference(source, *, rngs_seed: int = 0):
    """Published-weights folder -> (model in eval mode, config, ignored names).

    `config` is a ConfigDict with `model` (our model config) and
    `reference_kind`; the model's rng streams ('sample', 'dropout') are
    seeded with `rngs_seed`.
    """
    source = pathlib.Path(source)
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not (source / f).is_file():
            raise SourceNotFoundError(f"{source / f} not found")
    ref = read_reference_config(source / CONFIG_FILE)
    try:
        model_config, kind = model_config_from_reference(ref)
    except WeightsError as e:
        raise WeightsError(f"{source / CONFIG_FILE}: {e}") from e
    tensors = read_tensors(source / WEIGHTS_FILE)
    model = models.build_for_restore(model_config, seed=rngs_seed)
    ignored = load_reference_tensors(
        model, model_config, kind, tensors, origin=str(source / WEIGHTS_FILE)
    )
    model.eval()
    config = ml_collections.ConfigDict(
        {"model": model_config, "reference_kind": kind, "imported_from": str(source)}
    )
    return model, config, ignored


def read_reference_config(path) -> dict:
    """A published config.json as a dict; unreadable JSON names the file."""
    try:
        ref = json.loads(pathlib.Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(ref, dict):
        raise WeightsError(f"{path}: expected a JSON object, got {type(ref).__name__}")
    return ref


def read_tensors(path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file; a truncated or corrupt file names itself."""
    try:
        return load_file(str(path))
    except SafetensorError as e:
        size = pathlib.Path(path).stat().st_size
        raise WeightsError(
            f"{path} ({size} bytes) is truncated or corrupt, not a readable "
            f"safetensors file ({e}); download it again"
        ) from e


def export_reference(model, model_config, out_dir) -> pathlib.Path:
    """Write config.json + model.safetensors in the reference's Hub layout."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = reference_config(model_config)
    save_file(
        reference_tensors(model, model_config),
        str(out_dir / WEIGHTS_FILE),
        metadata={"format": "pt"},
    )
    (out_dir / CONFIG_FILE).write_text(json.dumps(ref, indent=1) + "\n")
    return out_dir


def is_reference_folder(path) -> bool:
    path = pathlib.Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def download_from_hub(repo_id: str, cache_dir=None) -> pathlib.Path:
    """config.json + model.safetensors of a Hub model: their folder in the cache.

    Through huggingface_hub (astrom3_jax/data/hub.py): the shared Hugging
    Face cache unless `cache_dir` is given, `HF_TOKEN` for gated
    repositories, resumed transfers. Both files come from one commit.
    Offline, the cache alone answers, within seconds.
    """
    try:
        offline = hub.offline_reason()  # once: a probe may take seconds
        config = hub.download(
            repo_id, CONFIG_FILE, cache_dir=cache_dir, offline=offline
        )
        # The commit the first file resolved to, so both files match.
        commit = config.parent.name
        hub.download(
            repo_id, WEIGHTS_FILE, revision=commit, cache_dir=cache_dir, offline=offline
        )
    except hub.HubNotFoundError as e:
        raise SourceNotFoundError(str(e)) from e
    except hub.HubError as e:
        raise DownloadError(
            f"could not download {repo_id} ({e}). Without network access, "
            f"download {CONFIG_FILE} and {WEIGHTS_FILE} of {repo_id} elsewhere "
            f"(`hf download {repo_id} {CONFIG_FILE} {WEIGHTS_FILE} --local-dir "
            "DIR`) and pass their folder instead."
        ) from e
    return config.parent


def resolve_source(source, cache_dir=None) -> pathlib.Path:
    """A local published-weights folder, or a Hub id ('owner/name') to download."""
    path = pathlib.Path(source).expanduser()
    if path.exists():
        if not is_reference_folder(path):
            raise SourceNotFoundError(f"{path} has no {CONFIG_FILE} + {WEIGHTS_FILE}")
        return path
    if str(source).count("/") == 1 and not str(source).startswith((".", "/", "~")):
        try:
            return download_from_hub(str(source), cache_dir)
        except (DownloadError, SourceNotFoundError, hub.HubAccessError) as e:
            raise type(e)(f"{source}: no such folder; as a Hub id: {e}") from e
    raise SourceNotFoundError(
        f"{source} does not exist, and is not a Hub id 'owner/name' either"
    )
