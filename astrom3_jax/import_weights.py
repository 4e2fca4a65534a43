"""Import the authors' published PyTorch weights, or export ours to that format.

Import (a folder with config.json + model.safetensors, or a Hub model id):
  python -m astrom3_jax.import_weights --source AstroMLCore/AstroM3-CLIP \
      --workdir runs/astrom3_clip
Export (our workdir -> PyTorch-layout safetensors + config.json):
  python -m astrom3_jax.import_weights --export --workdir runs/pretrain \
      --out exported/ [--step best|latest|N]
"""

from __future__ import annotations

from absl import app, flags, logging

_SOURCE = flags.DEFINE_string(
    "source",
    None,
    "Published-weights folder (config.json + model.safetensors) or "
    "a Hugging Face Hub model id, e.g. AstroMLCore/AstroM3-CLIP.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Import: the workdir to create. Export: the workdir to read."
)
_EXPORT = flags.DEFINE_bool("export", False, "Export --workdir to --out instead.")
_OUT = flags.DEFINE_string(
    "out", None, "Export: folder for config.json + model.safetensors."
)
_STEP = flags.DEFINE_string("step", None, "Export: 'best', 'latest' or a step number.")
_CACHE = flags.DEFINE_string("cache_dir", None, "Where Hub downloads go.")


def _step(value):
    return int(value) if value is not None and value.isdigit() else value


def main(argv):
    del argv
    from astrom3_jax import api, checkpoints, models

    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required")
    if _EXPORT.value:
        if _OUT.value is None:
            raise app.UsageError("--export needs --out")
        model, config = checkpoints.restore_model(
            _WORKDIR.value, _step(_STEP.value), build_fn=models.build_model
        )
        out = api.export_model(model, config, _OUT.value)
        logging.info("wrote %s", out)
        print(f"exported {_WORKDIR.value} to {out}")
        return
    if _SOURCE.value is None:
        raise app.UsageError("--source is required (or --export)")
    _, config, ignored = api.import_to_workdir(
        _SOURCE.value, _WORKDIR.value, cache_dir=_CACHE.value
    )
    print(
        f"imported {_SOURCE.value} ({config.reference_kind}) into {_WORKDIR.value}; "
        f"recomputed, not loaded: {', '.join(ignored) or 'nothing'}"
    )


if __name__ == "__main__":
    app.run(main)
