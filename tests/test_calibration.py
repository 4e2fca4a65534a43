"""Temperature scaling, ECE and the out-of-distribution score against
direct computations; a fine-tuned classifier's calibration used by predict."""

import dataclasses
import itertools

import numpy as np
import pytest
import scipy.special
import scipy.stats

from astrom3_jax.training import calibration, calibration_files


def test_temperature_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in scipy.special.softmax(z, -1)])
    t = calibration.fit_temperature(3.0 * z, labels)  # logits 3x too sharp
    assert t == pytest.approx(3.0, rel=0.08)
    best = calibration.nll(3.0 * z, labels, t)
    for other in (t * 0.97, t * 1.03):
        assert calibration.nll(3.0 * z, labels, other) > best
    # Calibrated, the ECE falls; the predicted classes never change.
    before = calibration.expected_calibration_error(
        calibration.softmax(3.0 * z), labels
    )
    after = calibration.expected_calibration_error(
        calibration.softmax(3.0 * z, t), labels
    )
    assert after < before / 2
    np.testing.assert_array_equal(
        np.argmax(calibration.softmax(3.0 * z, t), -1), np.argmax(z, -1)
    )


def test_nll_and_ece_by_hand():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]]))
    labels = np.array([0, 1, 2])
    assert calibration.nll(logits, labels) == pytest.approx(
        -(np.log(0.7) + np.log(0.4) + np.log(0.8)) / 3
    )
    probs = calibration.softmax(logits)
    # Bins of width 0.1: 0.7 -> (0.6, 0.7], 0.5 -> (0.4, 0.5], 0.8 -> (0.7, 0.8].
    # Right, wrong, right: |1 - 0.7| + |0 - 0.5| + |1 - 0.8|, each 1/3.
    want = (0.3 + 0.5 + 0.2) / 3
    assert calibration.expected_calibration_error(probs, labels, bins=10) == (
        pytest.approx(want)
    )


def test_head_features_average_the_present_embeddings():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    b = np.array([[0.0, 1.0], [np.nan, np.nan], [np.nan, np.nan]])
    feats, has = calibration.head_features({"a": a, "b": b}, ["a", "b"])
    np.testing.assert_allclose(feats[:2], [[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_array_equal(has, [True, True, False])


def test_mahalanobis_score_against_a_direct_computation():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    x = rng.normal(0, 1, (300, 4)) + 3 * np.eye(4)[labels]
    ood = calibration.OutOfDistribution.fit(x, labels, num_classes=4)
    means = np.array([x[labels == c].mean(0) for c in range(3)])
    resid = x - means[labels]
    cov = resid.T @ resid / len(x)
    s = calibration.SHRINKAGE
    cov = (1 - s) * cov + s * np.trace(cov) / 4 * np.eye(4)
    prec = np.linalg.inv(cov)
    q = rng.normal(0, 2, (7, 4))
    want = [min((v - m) @ prec @ (v - m) for m in means) for v in q]
    np.testing.assert_allclose(ood.score(q), want, rtol=1e-10)
    assert np.isnan(ood.means[3]).all()  # a class without objects is skipped
    ref = ood.with_reference([3.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(ref.percentile([0.5, 2.0, 2.5, 9.0]), [0, 25, 50, 100])


def test_wide_head_features_are_scored_in_their_principal_directions():
    """Features wider than MAX_HEAD_DIM: the Mahalanobis score in the span of
    the training split's top principal directions, here from an eigen-
    decomposition (the score does not depend on the basis chosen in it)."""
    rng = np.random.default_rng(6)
    k, d = calibration.MAX_HEAD_DIM, calibration.MAX_HEAD_DIM + 72
    labels = rng.integers(0, 3, 400)
    x = rng.normal(0, 1, (400, d)) * np.linspace(3, 0.1, d) + np.eye(d)[labels]
    ood = calibration.OutOfDistribution.fit(x, labels, num_classes=3)
    assert ood.basis.shape == (d, k) and ood.precision.shape == (k, k)
    centre = x.mean(0)
    _, vecs = np.linalg.eigh((x - centre).T @ (x - centre))
    top = vecs[:, ::-1][:, :k]
    z = (x - centre) @ top
    means = np.array([z[labels == c].mean(0) for c in range(3)])
    resid = z - means[labels]
    cov = resid.T @ resid / len(z)
    s = calibration.SHRINKAGE
    prec = np.linalg.inv((1 - s) * cov + s * np.trace(cov) / k * np.eye(k))
    q = rng.normal(0, 2, (5, d))
    qz = (q - centre) @ top
    want = [min((v - m) @ prec @ (v - m) for m in means) for v in qz]
    np.testing.assert_allclose(ood.score(q), want, rtol=1e-6)


def test_input_density_is_the_class_gaussian_distance():
    """The light-curve-number score against scipy's Gaussian log-density with
    the covariance built by hand (own covariance per class, shrunk toward
    the pooled variances; a class with too few objects uses the pooled),
    on the columns it reads (amplitude, log period, LKSL, second period):
    the squared Mahalanobis distance under the given (predicted) class, else
    under the most likely one; a calibration written before the distance
    (distance_only False) keeps twice the negative log-likelihood."""
    ch = list(calibration.INPUT_DENSITY_CHANNELS)
    assert [calibration.LIGHT_CURVE_NUMBERS[c] for c in ch] == [
        "amplitude", "log_period", "lksl_statistic", "second_period_logit"
    ]  # fmt: skip
    k = len(ch)
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(120, int), np.ones(80, int), np.full(3, 2)]
    x = rng.normal(0, 1, (len(labels), len(calibration.LIGHT_CURVE_NUMBERS)))
    x[:, ch] *= np.array([[0.5], [2.0], [1.0]])[[min(c, 2) for c in labels]]
    x[:, ch[:3]] += 4.0 * np.eye(3)[labels]
    x[5, 1] = np.nan  # a row without finite numbers is left out of the fit
    density = calibration.InputDensity.fit(x, labels, num_classes=4)
    assert density.distance_only
    likelihood = dataclasses.replace(density, distance_only=False)
    ok = np.isfinite(x[:, ch]).all(1)
    xs, ys = x[ok][:, ch], labels[ok]
    pooled = np.cov(xs.T)
    s = calibration.SHRINKAGE
    q = rng.normal(1, 3, (9, x.shape[1]))

    def gaussian(c):
        own = np.cov(xs[ys == c].T) if (ys == c).sum() > k + 1 else pooled
        cov = (1 - s) * own + s * np.diag(np.diag(pooled))
        return xs[ys == c].mean(0), cov

    def nll(c, rows):  # twice the negative log-density, up to scipy's constant
        mean, cov = gaussian(c)
        logpdf = scipy.stats.multivariate_normal(mean, cov).logpdf(rows)
        return -2 * logpdf - k * np.log(2 * np.pi)

    def distance(c, rows):
        mean, cov = gaussian(c)
        d = np.atleast_2d(rows) - mean
        return np.einsum("nd,de,ne->n", d, np.linalg.inv(cov), d)

    each = np.array([nll(c, q[:, ch]) for c in range(3)])
    likely = np.argmin(each, axis=0)
    np.testing.assert_allclose(likelihood.score(q), each.min(0), rtol=1e-9)
    want = [distance(c, q[j, ch])[0] for j, c in enumerate(likely)]
    np.testing.assert_allclose(density.score(q), want, rtol=1e-9)
    assert np.isnan(density.means[3]).all()  # no objects: skipped
    # Under a given class (the predicted one): that class's Gaussian; class
    # 3 has no objects, so the most likely class stands in.
    given = [0, 1, 2, 1, 0, 2, 1, 3, 0]
    stand_in = [likely[j] if c == 3 else c for j, c in enumerate(given)]
    want = [distance(c, q[j, ch])[0] for j, c in enumerate(stand_in)]
    np.testing.assert_allclose(density.score(q, given), want, rtol=1e-9)
    want = [nll(c, q[j, ch]) for j, c in enumerate(stand_in)]
    np.testing.assert_allclose(likelihood.score(q, given), want, rtol=1e-9)
    # Channels 3-5 (rfr_score, log10_mad, delta_t) are not read.
    moved = q.copy()
    moved[:, 3:6] += 100.0
    np.testing.assert_allclose(density.score(moved), density.score(q))
    q[0, 2] = np.nan
    assert np.isnan(density.score(q)[0])
    ref = density.with_reference([2.0, np.nan, 1.0])
    np.testing.assert_allclose(ref.percentile([0.0, 1.5, 3.0, np.nan]),
                               [0, 50, 100, np.nan])  # fmt: skip


def test_combined_percentile_takes_the_more_surprised_score():
    head = np.array([10.0, 90.0, 40.0, 55.0])
    inputs = np.array([95.0, 20.0, np.nan, 55.0])
    np.testing.assert_array_equal(
        calibration.combined_percentile(head, inputs), [95.0, 90.0, 40.0, 55.0]
    )


def test_auroc_against_counting_pairs():
    rng = np.random.default_rng(2)
    neg, pos = rng.normal(0, 1, 40), rng.normal(1, 1, 30)
    pos[:3] = neg[:3]  # ties count half
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0 for n, p in itertools.product(neg, pos)
    ]
    assert calibration.auroc(neg, pos) == pytest.approx(np.mean(pairs))


def test_calibration_file_round_trip_with_and_without_the_input_density(tmp_path):
    """calibration.npz keeps every array; a file written before the density
    existed (no input_* arrays) loads with inputs None, one written before
    the distance score (no input_distance_only) with the likelihood."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 200)
    wide = rng.normal(0, 1, (200, calibration.MAX_HEAD_DIM + 8))
    ood = calibration.OutOfDistribution.fit(wide, labels, 3)  # with a basis
    ood = ood.with_reference(rng.normal(0, 1, 20))
    density = calibration.InputDensity.fit(
        rng.normal(0, 1, (200, 6)), labels, 3, channels=(1, 4)
    )
    density = density.with_reference(rng.normal(0, 1, 30))
    for inputs in (density, None):
        calibration_files.save(
            tmp_path, calibration_files.Calibration(1.7, ood, inputs)
        )
        got = calibration_files.load(tmp_path)
        assert got.temperature == 1.7
        np.testing.assert_array_equal(got.ood.precision, ood.precision)
        np.testing.assert_array_equal(got.ood.score(wide), ood.score(wide))
        if inputs is None:
            assert got.inputs is None
        else:
            for f in (
                "means",
                "precisions",
                "log_dets",
                "reference_scores",
                "channels",
                "distance_only",
            ):
                np.testing.assert_array_equal(
                    getattr(got.inputs, f), getattr(density, f)
                )
    assert density.distance_only
    path = tmp_path / calibration_files.CALIBRATION_FILE
    calibration_files.save(tmp_path, calibration_files.Calibration(1.7, ood, density))
    with np.load(path) as z:
        older = {k: z[k] for k in z.files if k != "input_distance_only"}
    np.savez(path, **older)
    assert not calibration_files.load(tmp_path).inputs.distance_only
