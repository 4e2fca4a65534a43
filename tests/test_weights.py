"""Import of the authors' PyTorch weights, checked against their outputs."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from astrom3_jax import models
from astrom3_jax.models import weights

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "reference_weights_small"
KINDS = ("clip", "all", "photo", "spectra", "meta")
INPUTS = ("photometry", "photometry_mask", "spectra", "metadata")
RTOL = 1e-5


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def fixture_inputs(kind):
    io = np.load(FIXTURES / kind / "io.npz")
    return {k: io[k] for k in INPUTS if k in io}, io


def log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def reference_clip_loss(logits):
    """Sum over pairs of CE(rows) + CE(columns), mean over the batch."""
    total = 0.0
    for lg in logits:
        lg = np.asarray(lg, np.float64)
        diag = np.arange(len(lg))
        total += -log_softmax(lg, 1)[diag, diag].mean()
        total += -log_softmax(lg, 0)[diag, diag].mean()
    return total


def test_clip_matches_reference():
    model, config, ignored = weights.import_reference(FIXTURES / "clip")
    assert ignored == ["photometry_encoder.enc_embedding.position_embedding.pe"]
    assert config.model.photometry.attention == "probsparse"
    assert config.model.photometry.reference_reshape
    batch, io = fixture_inputs("clip")
    emb = model.embed(**batch)
    for name, key in [
        ("photometry", "p_emb"),
        ("spectra", "s_emb"),
        ("metadata", "m_emb"),
    ]:
        # the reference's embeddings are L2-normalised, like ours
        np.testing.assert_allclose(np.linalg.norm(io[key], axis=1), 1.0, rtol=1e-5)
        assert rel_err(emb[name], io[key]) < RTOL, name
    s = model.logit_scale
    logits = {
        "logits_ps": s("photometry", "spectra") * emb["photometry"] @ emb["spectra"].T,
        "logits_sm": s("spectra", "metadata") * emb["spectra"] @ emb["metadata"].T,
        "logits_mp": s("metadata", "photometry")
        * emb["metadata"]
        @ emb["photometry"].T,
    }
    for key, value in logits.items():
        assert rel_err(value, io[key]) < RTOL, key
    loss = reference_clip_loss(logits.values())
    assert abs(loss - float(io["loss"])) < RTOL * abs(float(io["loss"]))
    losses = pytest.importorskip("astrom3_jax.training.losses")
    ours = float(losses.clip_loss(emb, model.scales()))
    assert abs(ours - float(io["loss"])) < RTOL * abs(float(io["loss"]))


@pytest.mark.parametrize("kind", ["all", "photo", "spectra", "meta"])
def test_classifier_matches_reference(kind):
    model, _, _ = weights.import_reference(FIXTURES / kind)
    batch, io = fixture_inputs(kind)
    assert rel_err(model(**batch), io["logits"]) < RTOL


@pytest.mark.parametrize("kind", KINDS)
def test_export_round_trip_is_identity(kind, tmp_path):
    model, config, _ = weights.import_reference(FIXTURES / kind)
    weights.export_reference(model, config.model, tmp_path)
    src = load_file(str(FIXTURES / kind / weights.WEIGHTS_FILE))
    out = load_file(str(tmp_path / weights.WEIGHTS_FILE))
    assert set(src) == set(out)
    for name, value in src.items():
        assert out[name].shape == value.shape and out[name].dtype == value.dtype, name
        if name.endswith(".pe"):
            np.testing.assert_allclose(out[name], value, atol=1e-3)
        else:
            np.testing.assert_array_equal(out[name], value, err_msg=name)
    ref_cfg = json.loads((FIXTURES / kind / weights.CONFIG_FILE).read_text())
    assert json.loads((tmp_path / weights.CONFIG_FILE).read_text()) == ref_cfg


@pytest.mark.parametrize("kind", KINDS)
def test_our_model_round_trips_at_other_sizes(kind, tmp_path):
    cfg = models.small_model_config()
    cfg.photometry.update(seq_len=12, d_model=16, n_heads=2, d_ff=24, n_layers=3)
    cfg.spectra.conv_channels = (3, 4, 8, 8, 6)
    cfg.metadata.update(input_dim=7, hidden_dim=20)
    cfg.embed_dim, cfg.num_classes = 12, 5
    if kind != "clip":
        cfg.task = "classification"
    if kind in weights.SINGLE_KIND:
        cfg.modalities = (weights.SINGLE_KIND[kind],)
    model = models.build_model(cfg, nnx.Rngs(1))
    weights.export_reference(model, cfg, tmp_path)
    back, config, _ = weights.import_reference(tmp_path)
    assert config.reference_kind == kind
    a = jax.tree.leaves(nnx.state(model, nnx.Param))
    b = jax.tree.leaves(nnx.state(back, nnx.Param))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _broken_copy(tmp_path, edit):
    shutil.copy(FIXTURES / "meta" / weights.CONFIG_FILE, tmp_path)
    tensors = load_file(str(FIXTURES / "meta" / weights.WEIGHTS_FILE))
    edit(tensors)
    save_file(tensors, str(tmp_path / weights.WEIGHTS_FILE))
    return tmp_path


def test_missing_tensor_is_named(tmp_path):
    src = _broken_copy(tmp_path, lambda t: t.pop("model.3.bias"))
    with pytest.raises(weights.WeightsError, match=r"model\.3\.bias"):
        weights.import_reference(src)


def test_unexpected_tensor_is_named(tmp_path):
    src = _broken_copy(tmp_path, lambda t: t.update(extra=np.zeros(2, np.float32)))
    with pytest.raises(weights.WeightsError, match="extra"):
        weights.import_reference(src)


def test_shape_mismatch_is_named(tmp_path):
    def edit(t):
        t["model.0.weight"] = np.zeros((64, 33), np.float32)

    with pytest.raises(weights.WeightsError, match=r"model\.0\.weight"):
        weights.import_reference(_broken_copy(tmp_path, edit))


def test_bad_position_table_is_rejected(tmp_path):
    shutil.copy(FIXTURES / "photo" / weights.CONFIG_FILE, tmp_path)
    tensors = load_file(str(FIXTURES / "photo" / weights.WEIGHTS_FILE))
    pe = tensors["enc_embedding.position_embedding.pe"]
    tensors["enc_embedding.position_embedding.pe"] = pe[..., ::-1].copy()
    save_file(tensors, str(tmp_path / weights.WEIGHTS_FILE))
    with pytest.raises(weights.WeightsError, match="position_embedding.pe"):
        weights.import_reference(tmp_path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_tensor_is_refused_naming_tensor_and_file(tmp_path, bad):
    def edit(t):
        t["model.3.weight"][2, 5] = bad

    src = _broken_copy(tmp_path, edit)
    with pytest.raises(weights.WeightsError) as info:
        weights.import_reference(src)
    message = str(info.value)
    assert "model.3.weight" in message
    assert str(src / weights.WEIGHTS_FILE) in message
    nan, inf = (1, 0) if np.isnan(bad) else (0, 1)
    assert f"{nan} NaN and {inf} infinite" in message


def test_nan_in_the_position_buffer_is_refused(tmp_path):
    # Its check compares against our table with `>`, which NaN slips past.
    shutil.copy(FIXTURES / "photo" / weights.CONFIG_FILE, tmp_path)
    tensors = load_file(str(FIXTURES / "photo" / weights.WEIGHTS_FILE))
    tensors["enc_embedding.position_embedding.pe"][0, 7, 3] = np.nan
    save_file(tensors, str(tmp_path / weights.WEIGHTS_FILE))
    with pytest.raises(weights.WeightsError, match=r"position_embedding\.pe.*1 NaN"):
        weights.import_reference(tmp_path)


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.001])
def test_truncated_weights_file_is_named(tmp_path, keep):
    shutil.copy(FIXTURES / "meta" / weights.CONFIG_FILE, tmp_path)
    data = (FIXTURES / "meta" / weights.WEIGHTS_FILE).read_bytes()
    path = tmp_path / weights.WEIGHTS_FILE
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(weights.WeightsError) as info:
        weights.import_reference(tmp_path)
    assert str(path) in str(info.value)
    assert "truncated or corrupt" in str(info.value)


def test_corrupt_config_is_named(tmp_path):
    shutil.copy(FIXTURES / "meta" / weights.WEIGHTS_FILE, tmp_path)
    (tmp_path / weights.CONFIG_FILE).write_text('{"input_dim": 34,')
    with pytest.raises(weights.WeightsError, match="config.json: not valid JSON"):
        weights.import_reference(tmp_path)
