"""Model structure: parameter counts, shapes, registry, attention variants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from astrom3_jax import models
from astrom3_jax.data import modalities
from astrom3_jax.models import attention
from astrom3_jax.models.photometry import position_table


def n_params(module):
    return sum(int(np.size(x)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def small_batch(cfg, batch=3, seed=0):
    r = np.random.default_rng(seed)
    p = cfg.photometry
    mask = np.ones((batch, p.seq_len), np.float32)
    mask[0, p.seq_len // 2 :] = 0
    return {
        "photometry": r.normal(size=(batch, p.seq_len, p.in_channels)).astype(
            np.float32
        ),
        "photometry_mask": mask,
        "spectra": r.normal(size=(batch, 3, cfg.spectra.length)).astype(np.float32),
        "metadata": r.normal(size=(batch, cfg.metadata.input_dim)).astype(np.float32),
    }


def test_paper_parameter_counts():
    cfg = models.paper_model_config()
    model = nnx.eval_shape(lambda: models.build_clip_model(cfg, nnx.Rngs(0)))
    enc, proj = model.encoders, model.projections
    assert n_params(enc["photometry"]) == 1_589_888
    assert n_params(enc["spectra"]) == 22_272
    assert n_params(enc["metadata"]) == 280_576
    assert n_params(proj["photometry"]) == 13_107_712
    assert n_params(proj["spectra"]) == 606_720
    assert n_params(proj["metadata"]) == 262_656
    assert n_params(model) == 15_869_827
    assert enc["spectra"].output_dim == 1184


def test_clip_forward_normalised_and_scales():
    cfg = models.small_model_config()
    model = models.build_clip_model(cfg, nnx.Rngs(0))
    model.eval()
    emb = model(small_batch(cfg))
    assert set(emb) == {"photometry", "spectra", "metadata"}
    for e in emb.values():
        assert e.shape == (3, cfg.embed_dim) and e.dtype == jnp.float32
        np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, rtol=1e-5)
    assert len(model.pairs) == 3
    assert model.logit_scale("spectra", "photometry") == pytest.approx(100.0)
    model.temperatures["photometry__spectra"].set_value(jnp.asarray(10.0))
    assert float(model.logit_scale("photometry", "spectra")) == 100.0  # clamped
    kw = model.embed(**small_batch(cfg))
    np.testing.assert_allclose(kw["metadata"], emb["metadata"], rtol=1e-6)


def test_classifiers():
    cfg = models.small_model_config()
    cfg.task = "classification"
    batch = small_batch(cfg)
    multi = models.build_model(cfg, nnx.Rngs(0))
    multi.eval()
    assert multi(**batch).shape == (3, 10)
    for name in ("photometry", "spectra", "metadata"):
        cfg.modalities = (name,)
        single = models.build_model(cfg, nnx.Rngs(0))
        single.eval()
        assert single(batch).shape == (3, 10)


def _state_arrays(model):
    out = {}
    for path, v in nnx.to_flat_state(nnx.state(model)):
        x = v[...]
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out[path] = (type(v), np.asarray(x))
    return out


@pytest.mark.parametrize("task", ["clip", "classification"])
def test_built_models_match_flaxs_own_rngs(task):
    """init_model and build_for_restore count draws on the host while tracing
    (building.py); every key and parameter must be what flax's own Rngs give
    to the same builder eagerly."""
    cfg = models.small_model_config()
    cfg.task = task
    eager = _state_arrays(models.build_model(cfg, nnx.Rngs(5)))
    assert any(kind is nnx.RngKey for kind, _ in eager.values())
    got = _state_arrays(models.init_model(cfg, seed=5))
    assert got.keys() == eager.keys()
    for path, (kind, want) in eager.items():
        assert got[path][0] is kind, path
        np.testing.assert_allclose(got[path][1], want, rtol=1e-6, err_msg=str(path))
    zeroed = _state_arrays(models.build_for_restore(cfg, seed=5))
    assert zeroed.keys() == eager.keys()
    for path, (kind, want) in eager.items():
        assert zeroed[path][0] is kind, path
        if issubclass(kind, nnx.Param):
            assert zeroed[path][1].shape == want.shape, path
            assert zeroed[path][1].dtype == want.dtype, path
            assert not zeroed[path][1].any(), path
        else:
            np.testing.assert_array_equal(zeroed[path][1], want, err_msg=str(path))


def test_dropout_train_vs_eval():
    cfg = models.small_model_config()
    model = models.build_clip_model(cfg, nnx.Rngs(0))
    batch = small_batch(cfg)
    model.eval()
    a, b = model(batch), model(batch)
    np.testing.assert_array_equal(a["metadata"], b["metadata"])
    model.train()
    c = model(batch)
    assert not np.allclose(a["metadata"], c["metadata"])


def test_fourth_modality_is_a_registry_entry():
    class Toy(nnx.Module):
        def __init__(self, cfg, *, dtype, rngs):
            self.fc = nnx.Linear(cfg.input_dim, 8, rngs=rngs)
            self.output_dim = 8

        def __call__(self, x, *, rngs=None):
            return self.fc(x)

    def toy_transform(cols, ctx):
        return {"toy": cols["metadata"][:, :5]}

    entry = modalities.Modality(
        "toy", ("metadata",), ("toy",), toy_transform, encoder=Toy
    )
    with modalities.temporarily(entry):
        cfg = models.small_model_config()
        cfg.modalities = ("photometry", "spectra", "metadata", "toy")
        cfg.toy = {"input_dim": 5}
        model = models.build_clip_model(cfg, nnx.Rngs(0))
        model.eval()
        batch = small_batch(cfg) | {"toy": np.ones((3, 5), np.float32)}
        emb = model(batch)
        assert emb["toy"].shape == (3, cfg.embed_dim)
        assert len(model.pairs) == 6 and len(model.scales()) == 6


def test_position_table():
    t = position_table(7, 6)
    freq = np.exp(-math.log(10000.0) * np.arange(0, 6, 2) / 6)
    np.testing.assert_allclose(
        t[:, 0::2], np.sin(np.arange(7)[:, None] * freq), atol=1e-6
    )
    np.testing.assert_allclose(
        t[:, 1::2], np.cos(np.arange(7)[:, None] * freq), atol=1e-6
    )


def test_probsparse_counts():
    assert attention.probsparse_top_counts(200, 1) == (6, 6)
    assert attention.probsparse_top_counts(50, 20) == (50, 50)


def _qkv(b=2, length=40, h=2, d=4, seed=0):
    r = np.random.default_rng(seed)
    return [
        jnp.asarray(r.normal(size=(b, length, h, d)), jnp.float32) for _ in range(3)
    ]


def test_probsparse_equals_full_when_every_query_is_active():
    q, k, v = _qkv()
    out = attention.probsparse_attention(q, k, v, jax.random.key(0), factor=100)
    ref = jax.nn.dot_product_attention(q, k, v)  # (B, L, H, D)
    np.testing.assert_allclose(out.transpose(0, 2, 1, 3), ref, rtol=1e-5, atol=1e-6)


def test_probsparse_selection_matches_a_direct_implementation():
    q, k, v = _qkv(length=30)
    key = jax.random.key(3)
    out = np.asarray(attention.probsparse_attention(q, k, v, key, factor=1))
    # direct version with explicit sampled indices and gathers
    length, d = 30, 4
    u, n_sample = attention.probsparse_top_counts(length, 1)
    idx = np.asarray(jax.random.randint(key, (length, n_sample), 0, length))
    qn, kn, vn = (np.asarray(x).transpose(0, 2, 1, 3) for x in (q, k, v))
    for b in range(2):
        for h in range(2):
            s = qn[b, h] @ kn[b, h].T
            sampled = np.take_along_axis(s, idx, axis=1)
            m = sampled.max(1) - sampled.sum(1) / length
            top = np.argsort(-m)[:u]
            expect = np.repeat(vn[b, h].mean(0, keepdims=True), length, 0)
            a = np.exp(s[top] / np.sqrt(d))
            expect[top] = (a / a.sum(1, keepdims=True)) @ vn[b, h]
            np.testing.assert_allclose(out[b, h], expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "length,reference_reshape", [(40, True), (30, True), (30, False)]
)
def test_projected_probsparse_equals_the_plain_transcription(length, reference_reshape):
    """The fast path (no full K/V, lazy output projection) against projecting
    Q, K, V in full, attending, merging and projecting: outputs and the
    gradients of every parameter and of the input."""
    layer = attention.SelfAttention(
        16, 4, factor=1, reference_reshape=reference_reshape, rngs=nnx.Rngs(0)
    )
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, length, 16)), jnp.float32)
    mask = jnp.ones((3, length))
    weights = jnp.sin(jnp.arange(3 * length * 16.0)).reshape(3, length, 16)

    def loss(layer, x, projected):
        layer.projected = projected
        y = layer(x, mask, rngs=nnx.Rngs(sample=jax.random.key(5)))
        return jnp.sum(y * weights), y

    (_, fast), g_fast = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        layer, x, True
    )
    (_, plain), g_plain = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        layer, x, False
    )
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-6)
    flat_fast = jax.tree_util.tree_leaves_with_path(g_fast)
    flat_plain = jax.tree_util.tree_leaves_with_path(g_plain)
    assert len(flat_fast) == len(flat_plain) == 9  # 4 x (kernel, bias) + input
    for (path, a), (_, b) in zip(flat_fast, flat_plain, strict=True):
        # the key bias only shifts each softmax row: its gradient is zero
        # (exactly here, rounding noise in the plain version)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6, err_msg=str(path))
    assert np.abs(np.asarray(g_plain[0]["out"]["kernel"][...])).max() > 0.1


def test_full_attention_masks_padding_keys():
    layer = attention.SelfAttention(8, 2, kind="full", rngs=nnx.Rngs(0))
    r = np.random.default_rng(0)
    x = r.normal(size=(2, 10, 8)).astype(np.float32)
    mask = np.ones((2, 10), np.float32)
    mask[0, 6:] = 0
    changed = x.copy()
    changed[0, 6:] = 50.0  # padded rows of example 0
    a, b = layer(x, mask), layer(changed, mask)
    np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
    cfg = models.small_model_config()
    cfg.dtype = "bfloat16"
    model = models.build_clip_model(cfg, nnx.Rngs(0))
    model.eval()
    assert all(
        x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param))
    )
    emb = model(small_batch(cfg))
    assert all(e.dtype == jnp.float32 and np.all(np.isfinite(e)) for e in emb.values())


def test_torch_default_init():
    cfg = models.small_model_config()
    model = models.build_clip_model(cfg, nnx.Rngs(0))
    fc1 = model.encoders["metadata"].fc1
    bound = 1 / math.sqrt(cfg.metadata.input_dim)
    assert np.abs(fc1.kernel[...]).max() <= bound
    assert np.abs(fc1.bias[...]).max() <= bound
    assert np.abs(fc1.kernel[...]).max() > 0.9 * bound
    ln = model.encoders["photometry"].norm
    assert ln.epsilon == 1e-5 and np.all(ln.scale[...] == 1)


@pytest.mark.parametrize("impl", ["hash", "bernoulli"])
def test_dropout_rate_and_scaling(impl):
    from astrom3_jax.models import layers

    drop = layers.Dropout(0.245, rngs=nnx.Rngs(dropout=0), impl=impl)
    x = jnp.ones((64, 200, 129))
    y = np.asarray(drop(x))
    kept = y > 0
    assert abs(kept.mean() - 0.755) < 3e-3
    np.testing.assert_allclose(y[kept], 1 / 0.755, rtol=1e-4)
    assert not np.array_equal(kept, np.asarray(drop(x)) > 0)  # fresh mask per call
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)


def test_dropout_hash_masks_look_independent():
    from astrom3_jax.models import layers

    mask, keep = layers.hash_keep_mask(jax.random.key(0), (64, 200, 128), 0.755)
    m = np.asarray(mask, np.float64)
    assert abs(keep - 0.755) < 1e-9 and abs(m.mean() - keep) < 2e-3
    # neighbours along every axis, and two keys, are uncorrelated
    for a, b in [
        (m[..., 1:], m[..., :-1]),
        (m[:, 1:], m[:, :-1]),
        (m[1:], m[:-1]),
        (m, np.asarray(layers.hash_keep_mask(jax.random.key(1), m.shape, 0.755)[0])),
    ]:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5e-3


def test_exact_gelu_and_pool_match_library_versions():
    from astrom3_jax.models import photometry, spectra

    x = np.linspace(-8.0, 8.0, 4001, dtype=np.float32)
    exact = [v * 0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x.astype(float)]
    # 1 + erf cancels for x < -4, as in PyTorch's float32 formula: ~5e-7 abs
    np.testing.assert_allclose(
        photometry.gelu_erf(jnp.asarray(x)), exact, rtol=2e-7, atol=1e-6
    )
    assert float(photometry.gelu_erf(jnp.float32(1.0))) == pytest.approx(
        0.8413447460685429,
        abs=1e-7,  # 1 * Phi(1)
    )
    y = np.random.default_rng(0).normal(size=(2, 2573, 3)).astype(np.float32)
    pooled = spectra.max_pool(jnp.asarray(y), 4)
    assert pooled.shape == (2, 643, 3)
    np.testing.assert_array_equal(pooled, y[:, :2572].reshape(2, 643, 4, 3).max(2))
    np.testing.assert_array_equal(
        pooled, nnx.max_pool(y, window_shape=(4,), strides=(4,), padding="VALID")
    )
    # gradient to the first maximum of each window (PyTorch), ties included
    t = jnp.asarray([[[1.0], [3.0], [3.0], [0.0], [2.0], [2.0], [2.0], [2.0], [9.0]]])
    grad = jax.grad(
        lambda v: jnp.sum(spectra.max_pool(v, 4) * jnp.array([[[5.0], [7.0]]]))
    )(t)
    np.testing.assert_array_equal(grad[0, :, 0], [0, 5, 0, 0, 7, 0, 0, 0, 0])


def test_init_from_clip():
    cfg = models.small_model_config()
    clip_model = models.build_clip_model(cfg, nnx.Rngs(0))
    cfg.task = "classification"
    multi = models.build_model(cfg, nnx.Rngs(1))
    models.init_from_clip(multi, clip_model)
    for a, b in zip(
        jax.tree.leaves(nnx.state(multi.clip, nnx.Param)),
        jax.tree.leaves(nnx.state(clip_model, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    cfg.modalities = ("spectra",)
    single = models.build_model(cfg, nnx.Rngs(1))
    models.init_from_clip(single, clip_model)
    np.testing.assert_array_equal(
        single.encoder.convs[0].kernel[...],
        clip_model.encoders["spectra"].convs[0].kernel[...],
    )
    cfg.spectra.conv_channels = (3, 4, 4, 4, 4)
    with pytest.raises(ValueError, match="spectra encoder"):
        models.init_from_clip(models.build_model(cfg, nnx.Rngs(1)), clip_model)
