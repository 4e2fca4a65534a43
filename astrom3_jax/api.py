"""A small Python API for people who hold arrays rather than a data set.

    model, config = astrom3_jax.load_model("runs/pretrain")          # our workdir
    model, config = astrom3_jax.load_model("AstroMLCore/AstroM3-CLIP")  # Hub id
    emb = model.embed(photometry=p, photometry_mask=m, spectra=s, metadata=x)
    logits = classifier(photometry=p, photometry_mask=m)  # a classifier

Inputs are the prepared arrays of REFERENCE.md section 3: photometry
(B, 200, 9), photometry_mask (B, 200), spectra (B, 3, 2575), metadata (B, 34).
"""

from __future__ import annotations

import pathlib

from astrom3_jax import weights


def _is_workdir(path: pathlib.Path) -> bool:
    return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def load_model(path, *, step=None, cache_dir=None):
    """(model in eval mode, config) from any of:

    - one of our workdirs (`<dir>/config.json` + `<dir>/checkpoints/`), at
      `step` (None: best if any, else latest; 'best', 'latest' or a number);
    - a published-weights folder (`config.json` + `model.safetensors`);
    - a Hugging Face Hub model id such as 'AstroMLCore/AstroM3-CLIP'
      (downloaded to `cache_dir`, default ~/.cache/astrom3_jax).
    Published weights get the reference-compatible model mode.
    """
    local = pathlib.Path(str(path)).expanduser()
    if local.is_dir() and _is_workdir(local):
        from astrom3_jax import checkpoints, models

        return checkpoints.restore_model(str(local), step, build_fn=models.build_model)
    source = weights.resolve_source(path, cache_dir)
    model, config, _ = weights.import_reference(source)
    return model, config


def import_to_workdir(source, workdir, *, cache_dir=None):
    """Published weights (folder or Hub id) -> a workdir our tools accept.

    Returns (model, config, ignored tensor names).
    """
    from astrom3_jax import checkpoints

    folder = weights.resolve_source(source, cache_dir)
    model, config, ignored = weights.import_reference(folder)
    checkpoints.save_model_only(str(workdir), model, config)
    return model, config, ignored


def export_model(model, config, out_dir):
    """Our model -> `out_dir/{config.json, model.safetensors}` (PyTorch layout)."""
    return weights.export_reference(model, config.model, out_dir)
