"""The global-batch InfoNCE equals the single-device one, loss and gradients.

The reference (tests/helpers/losses.py) is written independently (full
N x N matrices, no all_gather, no masks helpers) so that a wrong offset, a
missing transpose or a gradient off by the device count would show.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from astrom3_jax.training import losses, sharding
from tests.helpers.losses import MODS, PAIRS, random_embeddings, reference_loss


def _scales(raw):
    return {p: jnp.clip(jnp.exp(raw[i]), 1.0, 100.0) for i, p in enumerate(PAIRS)}


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
    emb = random_embeddings(12)
    raw = jnp.array([np.log(100.0), 1.0, 2.5])
    got = losses.clip_loss(emb, _scales(raw))
    np.testing.assert_allclose(got, reference_loss(emb, raw), rtol=1e-6)


def test_eight_devices_loss_and_grads_match_one_device(mesh):
    emb = random_embeddings(32)
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
    emb = random_embeddings(40, d=4, seed=3)
    raw = jnp.array([1.0, 2.0, 3.0])
    got = _sharded_metrics(mesh, emb, raw, np.ones(40, np.float32))
    want = reference_metrics(emb, raw)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(got["loss"], reference_loss(emb, raw), rtol=1e-5)


def test_padded_eval_batch_scores_like_unpadded(mesh):
    n_real, n_pad = 13, 3
    real = random_embeddings(n_real, d=4, seed=5)
    junk = random_embeddings(n_pad, d=4, seed=6)
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


# ------------------------------------------------- objects missing modalities


def numpy_masked(emb, raw, presence, mask):
    """Loss, pair losses and metrics with holes, in float64, row by row.

    A pair's rows are those where both modalities are present and the row is
    real; every sum below runs over them only. The loss is the mean over the
    pairs with rows, times the number of pairs (0 when no pair has rows).
    """
    emb = {k: np.asarray(v, np.float64) for k, v in emb.items()}
    n = len(mask)
    pair_loss, out = {}, {}
    probs = np.zeros((n, n))
    in_a_pair = np.zeros(n, bool)
    for i, (a, b) in enumerate(PAIRS):
        s = float(np.clip(np.exp(np.float64(raw[i])), 1.0, 100.0))
        rows = [r for r in range(n) if mask[r] and presence[a][r] and presence[b][r]]
        total = 0.0
        hits = {(q, k): 0 for q in (f"{a}->{b}", f"{b}->{a}") for k in (1, 5)}
        for r in rows:
            in_a_pair[r] = True
            for x, y in ((a, b), (b, a)):
                logits = {c: s * float(emb[x][r] @ emb[y][c]) for c in rows}
                top = max(logits.values())
                lse = top + np.log(sum(np.exp(v - top) for v in logits.values()))
                total += lse - logits[r]
                rank = sum(1 for c in rows if c != r and logits[c] >= logits[r])
                for k in (1, 5):
                    hits[(f"{x}->{y}", k)] += rank < k
                for c in rows:
                    probs[r, c] += 0.5 * np.exp(logits[c] - lse)
        pair_loss[(a, b)] = total / len(rows) if rows else 0.0
        out[f"loss/{a}-{b}"] = pair_loss[(a, b)]
        for (q, k), h in hits.items():
            out[f"recall@{k}/{q}"] = h / len(rows) if rows else 0.0
    with_rows = [
        p
        for p in PAIRS
        if any(mask[r] and presence[p[0]][r] and presence[p[1]][r] for r in range(n))
    ]
    out["loss"] = (
        len(PAIRS) / len(with_rows) * sum(pair_loss[p] for p in with_rows)
        if with_rows
        else 0.0
    )
    counted = [r for r in range(n) if in_a_pair[r]]
    right = [int(np.argmax(probs[r])) == r for r in counted]
    out["accuracy"] = float(np.mean(right)) if counted else 0.0
    return out


N_HOLES = 24


def _holes(case):
    """(presence {modality: (N,) float32}, mask (N,) float32) of a named case."""
    rng = np.random.default_rng(7)
    n = N_HOLES
    ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
    mask = ones.copy()
    if case == "random":
        presence = {m: (rng.uniform(size=n) < 0.6).astype(np.float32) for m in MODS}
        mask[-3:] = 0  # a padded evaluation batch with holes
    elif case == "no_spectra":  # photometry-spectra and spectra-metadata: no rows
        presence = {m: (rng.uniform(size=n) < 0.7).astype(np.float32) for m in MODS}
        presence["spectra"] = zeros.copy()
    elif case == "one_row_in_two_pairs":  # photometry only in row 5
        presence = {m: ones.copy() for m in MODS}
        presence["photometry"] = np.where(np.arange(n) == 5, 1.0, 0.0)
        presence["photometry"] = presence["photometry"].astype(np.float32)
    elif case == "one_row_in_all":  # one complete object, nothing else
        presence = {m: (np.arange(n) == 11).astype(np.float32) for m in MODS}
    elif case == "nothing":
        presence = {m: zeros.copy() for m in MODS}
    elif case == "all_ones":
        presence = {m: ones.copy() for m in MODS}
    elif case == "only_flags_of_one":  # flags for spectra only: others present
        presence = {"spectra": (rng.uniform(size=n) < 0.5).astype(np.float32)}
    else:
        raise ValueError(case)
    return presence, mask


HOLE_CASES = (
    "random",
    "no_spectra",
    "one_row_in_two_pairs",
    "one_row_in_all",
    "nothing",
    "all_ones",
    "only_flags_of_one",
)


def _with_nan_fill(emb, presence):
    """Absent modalities hold garbage, here NaN: it must not reach any number."""
    out = {m: np.array(v) for m, v in emb.items()}
    for m, p in presence.items():
        out[m][p == 0] = np.nan
    return out


def _sharded_holes(mesh, fn, emb, raw, presence, mask):
    f = sharding.data_parallel(
        fn,
        mesh,
        in_specs=(
            {m: P("data") for m in MODS},
            P(),
            {m: P("data") for m in presence},
            P("data"),
        ),
        out_specs=P(),
    )
    return jax.jit(f)(_put(emb, mesh), raw, _put(presence, mesh), _put_one(mask, mesh))


def _put_one(x, mesh):
    return jax.device_put(x, sharding.data_sharding(mesh))


RAW = jnp.array([np.log(30.0), 1.5, 2.5])


@pytest.mark.parametrize("case", HOLE_CASES)
def test_holes_match_numpy_on_one_and_eight_devices(mesh, case):
    presence, mask = _holes(case)
    emb = _with_nan_fill(random_embeddings(N_HOLES, d=4, seed=9), presence)
    full = {m: presence.get(m, np.ones(N_HOLES, np.float32)) for m in MODS}
    want = numpy_masked(emb, RAW, full, mask)

    one = losses.clip_metrics(
        emb, _scales(RAW), mask=jnp.asarray(mask), presence=presence
    )
    loss, pairs = losses.clip_loss_and_pairs(
        emb, _scales(RAW), mask=jnp.asarray(mask), presence=presence
    )

    def per_device(e, r, p, m):
        return losses.clip_metrics(e, _scales(r), axis_name="data", mask=m, presence=p)

    eight = _sharded_holes(mesh, per_device, emb, RAW, presence, mask)
    assert set(one) == set(eight) == set(want)
    for got in (one, eight):
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=2e-5, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(loss, want["loss"], rtol=2e-5, atol=1e-5)
    for (a, b), v in pairs.items():
        np.testing.assert_allclose(v, want[f"loss/{a}-{b}"], rtol=2e-5, atol=1e-5)
    if case in ("one_row_in_all", "nothing"):
        assert float(loss) == 0.0 and float(one["loss"]) == 0.0


@pytest.mark.parametrize("case", HOLE_CASES)
def test_holes_gradients_are_finite_and_match_on_eight_devices(mesh, case):
    presence, mask = _holes(case)
    emb = _with_nan_fill(random_embeddings(N_HOLES, d=4, seed=10), presence)

    def loss_fn(e, r, p, m, axis_name=None):
        return losses.clip_loss(e, _scales(r), axis_name=axis_name, mask=m, presence=p)

    want, (g_emb, g_raw) = jax.value_and_grad(loss_fn, (0, 1))(
        emb, RAW, presence, jnp.asarray(mask)
    )
    assert np.isfinite(want)
    assert np.all(np.isfinite(g_raw))
    for m in MODS:
        g = np.asarray(g_emb[m])
        assert np.all(np.isfinite(g)), m
        absent = (mask == 0) | (presence.get(m, 1.0) == 0)
        assert np.all(g[absent] == 0), m  # no gradient into garbage rows

    # Gradient inside the per-device program, as the train step takes it.
    def per_device(e, r, p, m):
        fn = lambda e, r: loss_fn(e, r, p, m, axis_name="data")
        return jax.value_and_grad(fn, (0, 1))(e, r)

    f = sharding.data_parallel(
        per_device,
        mesh,
        in_specs=(
            {m: P("data") for m in MODS},
            P(),
            {m: P("data") for m in presence},
            P("data"),
        ),
        out_specs=(P(), ({m: P("data") for m in MODS}, P())),
    )
    got, (g8_emb, g8_raw) = jax.jit(f)(
        _put(emb, mesh), RAW, _put(presence, mesh), _put_one(mask, mesh)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g8_raw, g_raw, rtol=1e-4, atol=1e-5)
    for m in MODS:
        np.testing.assert_allclose(g8_emb[m], g_emb[m], rtol=1e-4, atol=1e-5)


def reference_masked_loss(emb, raw, presence, mask):
    """The loss with holes in jnp on each pair's sub-batch (no masking at all),
    for gradients: rows outside a pair are simply not there."""
    n = len(mask)
    terms, with_rows = 0.0, 0
    for i, (a, b) in enumerate(PAIRS):
        idx = [r for r in range(n) if mask[r] and presence[a][r] and presence[b][r]]
        if not idx:
            continue
        with_rows += 1
        idx = np.asarray(idx)
        s = jnp.clip(jnp.exp(raw[i]), 1.0, 100.0)
        logits = s * emb[a][idx] @ emb[b][idx].T
        rows = -jnp.mean(jnp.diag(jax.nn.log_softmax(logits, axis=1)))
        cols = -jnp.mean(jnp.diag(jax.nn.log_softmax(logits, axis=0)))
        terms = terms + rows + cols
    return terms * (len(PAIRS) / with_rows) if with_rows else jnp.float32(0.0)


@pytest.mark.parametrize("case", ("random", "no_spectra", "one_row_in_two_pairs"))
def test_holes_gradients_match_a_sub_batch_reference(case):
    presence, mask = _holes(case)
    emb = random_embeddings(N_HOLES, d=4, seed=12)
    full = {m: presence.get(m, np.ones(N_HOLES, np.float32)) for m in MODS}
    want, (g_emb_want, g_raw_want) = jax.value_and_grad(
        lambda e, r: reference_masked_loss(e, r, full, mask), (0, 1)
    )(emb, RAW)
    got, (g_emb, g_raw) = jax.value_and_grad(
        lambda e, r: losses.clip_loss(
            e, _scales(r), mask=jnp.asarray(mask), presence=presence
        ),
        (0, 1),
    )(emb, RAW)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(g_raw, g_raw_want, rtol=1e-4, atol=1e-6)
    for m in MODS:
        np.testing.assert_allclose(g_emb[m], g_emb_want[m], rtol=1e-4, atol=1e-6)


def test_without_flags_the_loss_is_the_original_bit_for_bit(mesh):
    """No flags (None or {}) is the original computation, op for op: the sum
    of the pair losses, compiled or not, on 1 and on 8 devices. All-ones
    flags are the same numbers in exact arithmetic (float rounding may
    differ once XLA compiles the masked program)."""
    emb = random_embeddings(32, d=8, seed=13)
    raw = jnp.array([np.log(100.0), 1.0, 2.5])
    scales = _scales(raw)
    original = sum(losses.pair_losses(emb, scales).values())
    for presence in (None, {}):
        got = losses.clip_loss(emb, scales, presence=presence)
        np.testing.assert_array_equal(got, original)
    np.testing.assert_array_equal(
        jax.jit(lambda e: losses.clip_loss(e, scales, presence={}))(emb),
        jax.jit(lambda e: losses.clip_loss(e, scales))(emb),
    )
    plain = losses.clip_metrics(emb, scales)
    for presence in (None, {}):
        got = losses.clip_metrics(emb, scales, presence=presence)
        assert list(got) == list(plain)
        for k in plain:
            np.testing.assert_array_equal(got[k], plain[k], err_msg=k)

    ones = {m: np.ones(32, np.float32) for m in MODS}
    flagged = losses.clip_metrics(emb, scales, presence=ones)
    for k in plain:
        np.testing.assert_allclose(flagged[k], plain[k], rtol=1e-6, err_msg=k)
    # Eager, op by op, the masked path gives the same floats.
    np.testing.assert_array_equal(
        losses.clip_loss(emb, scales, presence=ones), original
    )

    def sharded(presence):
        def per_device(e, r):
            return losses.clip_loss(e, _scales(r), axis_name="data", presence=presence)

        f = sharding.data_parallel(
            per_device,
            mesh,
            in_specs=({m: P("data") for m in MODS}, P()),
            out_specs=P(),
        )
        return jax.jit(jax.value_and_grad(f, (0, 1)))(_put(emb, mesh), raw)

    (l_none, g_none), (l_empty, g_empty) = sharded(None), sharded({})
    np.testing.assert_array_equal(l_none, l_empty)
    jax.tree.map(np.testing.assert_array_equal, g_none, g_empty)
