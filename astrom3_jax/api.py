"""A small Python API for people who hold arrays rather than a data set.

    model, config = astrom3_jax.load_model("runs/pretrain")  # or a Hub model id
    emb = model.embed(photometry=p, photometry_mask=m, spectra=s, metadata=x)

A classifier is called alike; `load_model` lists the arrays models take.
Stars in a catalogue table (the README's "Your own stars") become those
arrays with `astrom3_jax.catalog_inputs(catalog, workdir)`:

    stars = astrom3_jax.catalog_inputs("my_stars.csv", "runs/pretrain")
    emb = model.embed(**stars.inputs)  # rows: stars.ids
"""

from __future__ import annotations

import pathlib
import shutil

import ml_collections
from absl import logging

from astrom3_jax import compile_cache, errors
from astrom3_jax.configs import base
from astrom3_jax.data import hub, normalisation
from astrom3_jax.data.astrom3_tfds import hub_release
from astrom3_jax.models import weights
from astrom3_jax.training import init_from
from astrom3_jax.training import workdir as workdir_lib
from astrom3_jax.training.workdir import WORKDIR_CHECKPOINTS, WORKDIR_CONFIG


class WorkdirExistsError(errors.UserError, FileExistsError):
    """The target workdir already holds a model (and overwriting was not asked)."""


def load_model(path, *, step=None, cache_dir=None):
    """(model in eval mode, config) from any of:

    - one of our workdirs (`<dir>/config.json` + `<dir>/checkpoints/`), at
      `step` (None: best if any, else latest; 'best', 'latest' or a number);
    - a published-weights folder (`config.json` + `model.safetensors`);
    - a Hugging Face Hub model id such as 'AstroMLCore/AstroM3-CLIP'
      (downloaded by huggingface_hub into `cache_dir`, default the shared
      Hugging Face cache; `HF_TOKEN` for gated repositories).
    Published weights get the reference-compatible model mode. The model's
    kind (CLIP or classifier) comes from the workdir's `config.model.task`.
    Turns on the persistent compilation cache (`astrom3_jax.compile_cache`),
    so the next process compiles the model's programs only once.

    The model takes the prepared arrays of the AstroM3 data (Rizhko & Bloom
    2024, arXiv:2411.08842): photometry (B, 200, 9) = 3 light-curve channels
    (scaled time, flux, flux error) and 6 per-object auxiliary values
    repeated on every row; photometry_mask (B, 200), 1 on real rows; spectra
    (B, 3, 2575); metadata (B, 34). `astrom3_jax.models.inputs` checks them,
    names any argument of the wrong shape, and puts padding rows in
    canonical form.
    """
    compile_cache.enable()
    model, config = workdir_lib.load_any(path, step=step, cache_dir=cache_dir)
    return model, with_defaults(config)


def with_defaults(config):
    """`config` with every field of the base config it lacks (a run made
    before the field existed, or imported weights), at its default value."""
    full = base.get_config().to_dict()
    given = config.to_dict()
    model = {**full["model"], **given.pop("model", {})}
    merged = {**full, **given, "model": model}
    if "seq_len" not in given:
        # Imported published weights: the reference's light-curve length.
        merged["seq_len"] = model["photometry"]["seq_len"]
    return ml_collections.ConfigDict(merged)


def _held_model_files(workdir: pathlib.Path) -> list[pathlib.Path]:
    """The files of a workdir that an import writes, where they already exist."""
    names = (WORKDIR_CONFIG, WORKDIR_CHECKPOINTS)
    return [workdir / n for n in names if (workdir / n).exists()]


def release_info_json(source, *, info_json=None, release_dir=None, cache_dir=None):
    """The release configuration's info.json that published weights were
    trained with (its split seed read from the name, AstroM3-CLIP-<seed>,
    default 42): `info_json` as given, else from the release folder
    `release_dir`, else downloaded from the Hub's data set repository."""
    if info_json:
        return pathlib.Path(info_json)
    got = init_from.data_of({}, str(source))
    seed = got[1] if got else 42
    relative = f"splits/full/{seed}/info.json"
    if release_dir:
        return pathlib.Path(release_dir) / relative
    if pathlib.Path(str(source)).expanduser().exists():
        raise normalisation.MissingStatsError(
            f"{source} is a local folder: pass --info_json or --release_dir"
        )
    return hub.download(
        hub_release.REPO_ID,
        relative,
        repo_type=hub_release.REPO_TYPE,
        cache_dir=cache_dir,
        quiet=True,
    )


def import_to_workdir(
    source,
    workdir,
    *,
    cache_dir=None,
    overwrite=False,
    info_json=None,
    release_dir=None,
):
    """Published weights (folder or Hub id) -> a workdir our tools accept.

    A workdir that already holds a model (config.json or checkpoints/) is
    refused unless `overwrite=True`, which replaces both; other files in it
    stay. The weights are read and checked before anything is replaced.
    The normalisation statistics of the release configuration the weights
    were trained on are recorded too (see `release_info_json`); where that
    file cannot be had (offline), a warning says how to record them later.
    Returns (model, config, ignored tensor names).
    """
    workdir = pathlib.Path(workdir).expanduser()
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirExistsError(f"workdir {workdir} exists and is not a folder")
    held = _held_model_files(workdir)
    if held and not overwrite:
        raise WorkdirExistsError(
            f"workdir {workdir} already holds a model "
            f"({', '.join(p.name for p in held)}); choose another workdir, or "
            "replace it with --overwrite (Python: overwrite=True)"
        )
    folder = weights.resolve_source(source, cache_dir)
    model, config, ignored = weights.import_reference(folder)
    for path in held:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    workdir_lib.save_model_only(str(workdir), model, config)
    try:
        path = release_info_json(
            source, info_json=info_json, release_dir=release_dir, cache_dir=cache_dir
        )
        stats = normalisation.NormalisationStats.from_info_json(path)
    except (errors.UserError, OSError) as e:
        logging.warning(
            "Imported %s without normalisation statistics (%s). Record them "
            "before predicting: python -m astrom3_jax.record_stats "
            "--workdir %s --info_json RELEASE/splits/full/<seed>/info.json",
            source,
            e,
            workdir,
        )
    else:
        normalisation.write_stats(workdir, stats)
    return model, config, ignored


def export_model(model, config, out_dir):
    """Our model -> `out_dir/{config.json, model.safetensors}` (PyTorch layout)."""
    return weights.export_reference(model, config.model, out_dir)
