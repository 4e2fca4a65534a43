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

from astrom3_jax.training import losses, sharding

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


def reference_rank(logits):
    """Rivals not known to rank below the true match (ties and NaN count),
    and whether the true match itself is NaN (never a hit)."""
    true = np.diag(logits)[:, None]
    ahead = ~(logits < true)
    np.fill_diagonal(ahead, False)
    return ahead.sum(axis=1), np.isnan(true[:, 0])


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
            rank, lost = reference_rank(lg)
            out[f"recall@1/{q}"] = np.mean((rank < 1) & ~lost)
            out[f"recall@5/{q}"] = np.mean((rank < 5) & ~lost)
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


def _sharded_metrics(mesh, emb, raw, mask, ks=(1, 5)):
    def per_device(emb, raw, mask):
        return losses.clip_metrics(
            emb, _scales(raw), axis_name="data", mask=mask, ks=ks
        )

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


def _recalls(metrics):
    return {k: float(v) for k, v in metrics.items() if k.startswith("recall@")}


# 0.5 * 4 = 1 and 0.25 * 4 = 1 exactly: every logit of a collapsed model is
# the same float however the matmul orders its sums, so the ties are exact.
_COLLAPSED = np.full(4, 0.5, np.float32)


def test_collapsed_model_retrieves_nothing():
    # All 8 logits of a row tie, so the true match has 7 rivals ahead of it.
    emb = {m: np.tile(_COLLAPSED, (8, 1)) for m in MODS}
    got = _recalls(losses.clip_metrics(emb, _scales(jnp.zeros(3)), ks=(1, 5, 8)))
    assert len(got) == 18
    for k, v in got.items():
        assert v == (1.0 if k.startswith("recall@8/") else 0.0), k


def test_nan_model_retrieves_nothing():
    emb = {m: np.full((6, 4), np.nan, np.float32) for m in MODS}
    got = _recalls(losses.clip_metrics(emb, _scales(jnp.zeros(3)), ks=(1, 6)))
    assert len(got) == 12 and set(got.values()) == {0.0}, got


def test_a_nan_row_misses_and_its_nan_column_counts_against_every_row():
    # One-hot embeddings, equal across modalities: logits are s on the
    # diagonal and 0 elsewhere, a perfect retrieval, until photometry row 2
    # turns NaN. Then photometry->x: row 2 (all NaN) misses, 3 of 4 hit.
    # x->photometry: column 2 is NaN in every row, a rival not known to be
    # lower, so no row is first; rows 0, 1 and 3 are second.
    emb = {m: np.eye(4, dtype=np.float32) for m in MODS}
    emb["photometry"][2] = np.nan
    got = _recalls(losses.clip_metrics(emb, _scales(jnp.zeros(3)), ks=(1, 2)))
    for other in ("spectra", "metadata"):
        assert got[f"recall@1/photometry->{other}"] == 0.75
        assert got[f"recall@2/photometry->{other}"] == 0.75
        assert got[f"recall@1/{other}->photometry"] == 0.0
        assert got[f"recall@2/{other}->photometry"] == 0.75
    assert got["recall@1/spectra->metadata"] == 1.0
    assert got["recall@1/metadata->spectra"] == 1.0


def test_collapsed_padding_never_counts_as_a_rival(mesh):
    # 4 real rows and 12 padding rows, all the same vector: unmasked, every
    # real row would have 15 tied rivals. The padded columns must not count,
    # leaving 3 rivals: recall@1 = 0 and recall@5 = 1, on 8 devices and on one.
    emb = {m: np.tile(_COLLAPSED, (16, 1)) for m in MODS}
    mask = np.r_[np.ones(4), np.zeros(12)].astype(np.float32)
    raw = jnp.array([0.5, 1.0, 2.0])
    sharded = _recalls(_sharded_metrics(mesh, emb, raw, mask, ks=(1, 3, 4, 5)))
    single = _recalls(
        losses.clip_metrics(emb, _scales(raw), mask=jnp.asarray(mask), ks=(1, 3, 4, 5))
    )
    assert sharded == single
    assert len(sharded) == 24
    for k, v in sharded.items():
        assert v == (0.0 if k.startswith(("recall@1/", "recall@3/")) else 1.0), k


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
