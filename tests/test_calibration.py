"""Temperature scaling, ECE and the out-of-distribution score against
direct computations; a fine-tuned classifier's calibration used by predict."""

import itertools

import numpy as np
import pytest
import scipy.special

from astrom3_jax.training import calibration


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


def test_auroc_against_counting_pairs():
    rng = np.random.default_rng(2)
    neg, pos = rng.normal(0, 1, 40), rng.normal(1, 1, 30)
    pos[:3] = neg[:3]  # ties count half
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0 for n, p in itertools.product(neg, pos)
    ]
    assert calibration.auroc(neg, pos) == pytest.approx(np.mean(pairs))
