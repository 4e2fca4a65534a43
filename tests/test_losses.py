"""The global-batch InfoNCE equals the single-device one, loss and gradients.

The reference below is written independently (full N x N matrices, no
all_gather, no masks helpers) so that a wrong offset, a missing transpose
or a gradient off by the device count would show.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from astrom3_jax import losses, sharding

MODS = ("photometry", "spectra", "metadata")
PAIRS = list(itertools.combinations(MODS, 2))


def _embeddings(n, d=16, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for m in MODS:
        x = rng.normal(size=(n, d)).astype(np.float32)
        out[m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _scales(raw):
    return {p: jnp.clip(jnp.exp(raw[i]), 1.0, 100.0) for i, p in enumerate(PAIRS)}


def reference_loss(emb, raw):
    """Sum over pairs of CE(rows) + CE(columns) on the whole batch."""
    total = 0.0
    for i, (a, b) in enumerate(PAIRS):
        s = jnp.clip(jnp.exp(raw[i]), 1.0, 100.0)
        logits = s * emb[a] @ emb[b].T
        n = logits.shape[0]
        rows = -jnp.mean(jnp.diag(jax.nn.log_softmax(logits, axis=1)))
        cols = -jnp.mean(jnp.diag(jax.nn.log_softmax(logits, axis=0)))
        total = total + rows + cols
        del n
    return total


def reference_metrics(emb, raw):
    emb = {k: np.asarray(v, np.float64) for k, v in emb.items()}
    out, probs = {}, 0.0
    for i, (a, b) in enumerate(PAIRS):
        s = float(np.clip(np.exp(raw[i]), 1, 100))
        logits = s * emb[a] @ emb[b].T
        n = len(logits)

        def softmax(x):
            e = np.exp(x - x.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        probs = probs + (softmax(logits) + softmax(logits.T)) / 2
        for q, lg in ((f"{a}->{b}", logits), (f"{b}->{a}", logits.T)):
            rank = (lg > np.diag(lg)[:, None]).sum(axis=1)
            out[f"recall@1/{q}"] = np.mean(rank < 1)
            out[f"recall@5/{q}"] = np.mean(rank < 5)
    out["accuracy"] = np.mean(np.argmax(probs, axis=1) == np.arange(n))
    return out


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(8)


def _sharded_loss_fn(mesh):
    def per_device(emb, raw):
        return losses.clip_loss(emb, _scales(raw), axis_name="data")

    return sharding.data_parallel(
        per_device, mesh, in_specs=({m: P("data") for m in MODS}, P()), out_specs=P()
    )


def _put(emb, mesh):
    return {k: jax.device_put(v, sharding.data_sharding(mesh)) for k, v in emb.items()}


def test_single_device_matches_reference():
    emb = _embeddings(12)
    raw = jnp.array([np.log(100.0), 1.0, 2.5])
    got = losses.clip_loss(emb, _scales(raw))
    np.testing.assert_allclose(got, reference_loss(emb, raw), rtol=1e-6)


def test_eight_devices_loss_and_grads_match_one_device(mesh):
    emb = _embeddings(32)
    raw = jnp.array([np.log(100.0), 1.0, 2.5])
    want, (g_emb_want, g_raw_want) = jax.value_and_grad(reference_loss, (0, 1))(
        emb, raw
    )
    # Gradient taken outside shard_map.
    f = _sharded_loss_fn(mesh)
    got, (g_emb, g_raw) = jax.jit(jax.value_and_grad(f, (0, 1)))(_put(emb, mesh), raw)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(g_raw, g_raw_want, rtol=1e-5, atol=1e-5)
    for m in MODS:
        np.testing.assert_allclose(g_emb[m], g_emb_want[m], rtol=1e-5, atol=1e-5)

    # Gradient taken inside the per-device program, as the train step does:
    # replicated inputs must get the global gradient, not N times it.
    def per_device(emb, raw):
        fn = lambda e, r: losses.clip_loss(e, _scales(r), axis_name="data")
        return jax.value_and_grad(fn, (0, 1))(emb, raw)

    inner = sharding.data_parallel(
        per_device,
        mesh,
        in_specs=({m: P("data") for m in MODS}, P()),
        out_specs=(P(), ({m: P("data") for m in MODS}, P())),
    )
    got, (g_emb, g_raw) = jax.jit(inner)(_put(emb, mesh), raw)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(g_raw, g_raw_want, rtol=1e-5, atol=1e-5)
    for m in MODS:
        np.testing.assert_allclose(g_emb[m], g_emb_want[m], rtol=1e-5, atol=1e-5)


def _sharded_metrics(mesh, emb, raw, mask):
    def per_device(emb, raw, mask):
        return losses.clip_metrics(emb, _scales(raw), axis_name="data", mask=mask)

    f = sharding.data_parallel(
        per_device,
        mesh,
        in_specs=({m: P("data") for m in MODS}, P(), P("data")),
        out_specs=P(),
    )
    return jax.jit(f)(
        _put(emb, mesh), raw, jax.device_put(mask, sharding.data_sharding(mesh))
    )


def test_metrics_match_reference(mesh):
    emb = _embeddings(40, d=4, seed=3)
    raw = jnp.array([1.0, 2.0, 3.0])
    got = _sharded_metrics(mesh, emb, raw, np.ones(40, np.float32))
    want = reference_metrics(emb, raw)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(got["loss"], reference_loss(emb, raw), rtol=1e-5)


def test_padded_eval_batch_scores_like_unpadded(mesh):
    n_real, n_pad = 13, 3
    real = _embeddings(n_real, d=4, seed=5)
    junk = _embeddings(n_pad, d=4, seed=6)
    padded = {m: np.concatenate([real[m], junk[m]]) for m in MODS}
    mask = np.r_[np.ones(n_real), np.zeros(n_pad)].astype(np.float32)
    raw = jnp.array([2.0, 3.0, 4.6])
    got = _sharded_metrics(mesh, padded, raw, mask)
    want = losses.clip_metrics(real, _scales(raw))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(got["loss"], reference_loss(real, raw), rtol=1e-5)


def test_device_keys_give_different_dropout_masks(mesh):
    drop = nnx.Dropout(0.5, rngs=None)

    def per_device(key, x):
        return drop(x, rngs=nnx.Rngs(dropout=sharding.device_key(key)))

    f = sharding.data_parallel(
        per_device, mesh, in_specs=(P(), P("data")), out_specs=P("data")
    )
    x = jax.device_put(jnp.ones((8, 64)), sharding.data_sharding(mesh))
    out = np.asarray(jax.jit(f)(jax.random.key(0), x)) > 0
    assert len({row.tobytes() for row in out}) == 8
