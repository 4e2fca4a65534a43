"""load_model, the import/export workdir path and the Hub download error."""

import json
import pathlib
import urllib.error

import numpy as np
import pytest
from safetensors.numpy import load_file

from astrom3_jax import api, weights

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "reference_weights_small"


def test_workdir_import_load_and_export(tmp_path):
    src = FIXTURES / "all"
    api.import_to_workdir(src, tmp_path / "run")
    model, config = api.load_model(tmp_path / "run")
    io = np.load(src / "io.npz")
    logits = model(
        photometry=io["photometry"],
        photometry_mask=io["photometry_mask"],
        spectra=io["spectra"],
        metadata=io["metadata"],
    )
    err = np.max(np.abs(logits - io["logits"])) / np.max(np.abs(io["logits"]))
    assert err < 1e-5
    emb = model.embed(
        photometry=io["photometry"],
        photometry_mask=io["photometry_mask"],
        spectra=io["spectra"],
        metadata=io["metadata"],
    )
    assert set(emb) == {"photometry", "spectra", "metadata"}
    out = api.export_model(model, config, tmp_path / "exported")
    a, b = (
        load_file(str(src / weights.WEIGHTS_FILE)),
        load_file(str(out / "model.safetensors")),
    )
    for name in a:
        if not name.endswith(".pe"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (src / "config.json").read_text()
    )


def test_load_model_from_published_folder():
    model, config = api.load_model(FIXTURES / "meta")
    io = np.load(FIXTURES / "meta" / "io.npz")
    np.testing.assert_allclose(
        model(metadata=io["metadata"]), io["logits"], rtol=1e-5, atol=1e-6
    )
    assert config.model.modalities == ("metadata",)


def test_hub_download_error_is_clear(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="AstroMLCore/AstroM3-CLIP"):
        api.load_model("AstroMLCore/AstroM3-CLIP", cache_dir=tmp_path)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        api.load_model(tmp_path)
