"""Where each tensor of the authors' PyTorch models lives in ours, and how
its layout differs: one `Entry` per parameter, for both directions."""

from __future__ import annotations

import dataclasses

import numpy as np

SINGLE_KIND = {"photo": "photometry", "spectra": "spectra", "meta": "metadata"}
PREFIX = {"photometry": "p_", "spectra": "s_", "metadata": "m_"}
# reference temperature name -> our modality pair
TEMPERATURES = {
    "logit_scale_ps": ("photometry", "spectra"),
    "logit_scale_sm": ("spectra", "metadata"),
    "logit_scale_mp": ("photometry", "metadata"),
}


# --------------------------------------------------------------------------
# layouts: (ours <- torch, torch <- ours). Linear [out, in] <-> kernel
# [in, out]; Conv1d [out, in, k] <-> nnx.Conv kernel [k, in, out]; the
# Informer's kernel-1 Conv1d feed-forward layers [out, in, 1] <-> Linear
# [in, out]. Flatten orders already agree (photometry l * d_model + c,
# spectra c * T + t).


def _linear_in(w):
    return np.ascontiguousarray(w.T)


def _conv_in(w):
    return np.ascontiguousarray(np.transpose(w, (2, 1, 0)))


def _conv1x1_in(w):
    return np.ascontiguousarray(w[:, :, 0].T)


def _conv1x1_out(w):
    return np.ascontiguousarray(w.T[:, :, None])


def _same(w):
    return np.array(w, order="C")  # ascontiguousarray would make 0-d arrays 1-d


LAYOUTS = {
    "linear": (_linear_in, _linear_in),
    "conv": (_conv_in, _conv_in),
    "conv1x1": (_conv1x1_in, _conv1x1_out),
    "copy": (_same, _same),
}


@dataclasses.dataclass(frozen=True)
class Entry:
    torch_name: str
    path: tuple  # path of the nnx.Param in our model
    layout: str


def _linear_entries(torch_prefix, path, layout="linear"):
    return [
        Entry(f"{torch_prefix}.weight", (*path, "kernel"), layout),
        Entry(f"{torch_prefix}.bias", (*path, "bias"), "copy"),
    ]


def _norm_entries(torch_prefix, path):
    return [
        Entry(f"{torch_prefix}.weight", (*path, "scale"), "copy"),
        Entry(f"{torch_prefix}.bias", (*path, "bias"), "copy"),
    ]


def _informer_entries(t, path, cfg):
    out = [
        Entry(
            f"{t}enc_embedding.value_embedding.tokenConv.weight",
            (*path, "token_conv", "kernel"),
            "conv",
        )
    ]
    for i in range(cfg.n_layers):
        tl, pl = f"{t}encoder.attn_layers.{i}.", (*path, "layers", i)
        for name in ("query", "key", "value", "out"):
            out += _linear_entries(
                f"{tl}attention.{name}_projection", (*pl, "attention", name)
            )
        out += _linear_entries(f"{tl}conv1", (*pl, "ff1"), "conv1x1")
        out += _linear_entries(f"{tl}conv2", (*pl, "ff2"), "conv1x1")
        out += _norm_entries(f"{tl}norm1", (*pl, "norm1"))
        out += _norm_entries(f"{tl}norm2", (*pl, "norm2"))
    return out + _norm_entries(f"{t}encoder.norm", (*path, "norm"))


def _galspecnet_entries(t, path, cfg):
    out = []
    for i in range(len(cfg.conv_channels) - 1):
        # torch Sequential index: conv, relu, pool per block (no pool at the end)
        out += _linear_entries(f"{t}layers.{3 * i}", (*path, "convs", i), "conv")
    return out


def _mlp_entries(t, path, cfg):
    return _linear_entries(f"{t}model.0", (*path, "fc1")) + _linear_entries(
        f"{t}model.3", (*path, "fc2")
    )


ENCODER_ENTRIES = {
    "photometry": _informer_entries,
    "spectra": _galspecnet_entries,
    "metadata": _mlp_entries,
}


def _pe_name(kind, t=""):
    return f"{t}enc_embedding.position_embedding.pe"


def layout_entries(kind: str, model_config) -> tuple[list[Entry], list[str]]:
    """(mapped entries, names of buffers we recompute) for a model kind."""
    if kind in SINGLE_KIND:
        name = SINGLE_KIND[kind]
        entries = ENCODER_ENTRIES[name]("", ("encoder",), model_config[name])
        entries += _linear_entries("fc", ("fc",))
        buffers = [_pe_name(kind)] if name == "photometry" else []
        return entries, buffers
    root = ("clip",) if kind == "all" else ()
    entries, buffers = [], []
    for name in ("photometry", "spectra", "metadata"):
        t = f"{name}_encoder."
        entries += ENCODER_ENTRIES[name](
            t, (*root, "encoders", name), model_config[name]
        )
        entries += _linear_entries(f"{name}_proj", (*root, "projections", name))
    buffers.append(_pe_name(kind, "photometry_encoder."))
    for tname, (a, b) in TEMPERATURES.items():
        entries.append(Entry(tname, (*root, "temperatures", f"{a}__{b}"), "copy"))
    if kind == "all":
        entries += _linear_entries("fc", ("fc",))
    return entries, buffers
