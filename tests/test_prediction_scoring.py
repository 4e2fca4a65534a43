"""predict's scores of stars against a reference, on a hand-made reference
in the plane whose nearest neighbours and scores are worked out by hand."""

import numpy as np
import pytest

from astrom3_jax.analysis import store
from astrom3_jax.prediction import scoring
from astrom3_jax.training import calibration, calibration_files

C30 = np.sqrt(3) / 2
PLANE = {0: (1.0, 0.0), 30: (C30, 0.5), 60: (0.5, C30), 90: (0.0, 1.0)}
PLANE[180] = (-1.0, 0.0)
NAN2 = (np.nan, np.nan)


def _reference():
    """Objects at 0, 30, 90, 180 degrees in both modalities, labels A A B B;
    the one at 180 has no spectrum."""
    phot = np.array([PLANE[d] for d in (0, 30, 90, 180)])
    spec = np.array([*phot[:3], NAN2])
    index = {
        "id": np.array(["r0", "r1", "r2", "r3"]),
        "name": np.array(["r0", "r1", "r2", "r3"]),
        "label": np.array([0, 0, 1, 1]),
        "spectra_present": np.array([True, True, True, False]),
    }
    emb = {"photometry": phot, "spectra": spec, store.FUSED: phot}
    return store.Split("train", emb, index, None, ["A", "B"])


def test_neighbours_scores_by_hand():
    ref = _reference()
    # Star 0 (label B): both modalities at 60 degrees; matched on both, so
    # r3 (no spectrum) is no candidate: nearest r1 and r2, cosine c each.
    # Star 1 (no label): light curve only at 180 degrees; all four are
    # candidates: nearest r3 (cosine 1) and r2 (0).
    embeddings = {
        "photometry": np.array([PLANE[60], PLANE[180]]),
        "spectra": np.array([PLANE[60], NAN2]),
    }
    present = {"photometry": np.array([True, True]), "spectra": np.array([1, 0], bool)}
    got = scoring.neighbours(ref, embeddings, present, np.array([1, -1]), 2, 2)
    assert sorted(got.index[0]) == [1, 2] and got.index[1].tolist() == [3, 2]
    np.testing.assert_allclose(got.cosine, [[C30, C30], [1.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(got.outlier, [1 - C30, 0.5], atol=1e-12)
    # Own scores (2 nearest, each without itself), on both modalities over
    # r0..r2: 1 - c/2, 1 - (c + 1/2)/2, 3/4; 1 - c is below all of them.
    # On the light curve over r0..r3 also 1 + c/2 for r3: only
    # 1 - (c + 1/2)/2 = 0.317 is at or below star 1's 0.5.
    np.testing.assert_allclose(got.percentile, [0.0, 25.0])
    # Votes: star 0's neighbours are A and B (tie: the lower class, A),
    # star 1's are B and B.
    assert got.vote.tolist() == [0, 1]
    np.testing.assert_allclose(got.agreement, [0.5, 1.0])
    # Mislabel: 1 of star 0's 2 neighbours is not B; star 1 has no label.
    assert got.mislabel[0] == pytest.approx(0.5) and np.isnan(got.mislabel[1])


def test_a_star_without_candidates_has_no_neighbours():
    ref = _reference()
    one = {"photometry": np.array([PLANE[0]]), "spectra": np.array([PLANE[0]])}
    present = {"photometry": np.array([False]), "spectra": np.array([False])}
    got = scoring.neighbours(ref, one, present, np.array([0]), 3, 2)
    assert got.index.tolist() == [[-1, -1, -1]] and got.vote.tolist() == [-1]
    for values in (got.outlier, got.percentile, got.agreement, got.mislabel):
        assert np.isnan(values).all()


def test_probabilities_are_a_stable_softmax():
    p = scoring.probabilities(np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]]))
    np.testing.assert_allclose(p, [[0.25, 0.75], [0.5, 0.5]])


def test_out_of_distribution_joins_the_head_and_light_curve_scores():
    """With a light-curve density the score is the larger of the two
    validation percentiles, computed here from each part by hand; without
    the stars' numbers (or a density) it is the head's Mahalanobis score."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 300)
    feats = rng.normal(0, 1, (300, 4)) + 2 * np.eye(4)[labels]
    width = len(calibration.LIGHT_CURVE_NUMBERS)
    aux = rng.normal(0, 1, (300, width)) + 3 * np.eye(width)[labels]
    ood = calibration.OutOfDistribution.fit(feats, labels, 3)
    ood = ood.with_reference(ood.score(feats[:50]))
    density = calibration.InputDensity.fit(aux, labels, 3)
    density = density.with_reference(density.score(aux[:50]))
    cal = calibration_files.Calibration(1.0, ood, density)
    emb = {"photometry": rng.normal(0, 1, (6, 4))}
    numbers = rng.normal(0, 3, (6, width))
    numbers[2] = np.nan  # a star without a light curve: the head alone
    probs = np.eye(3)[[0, 1, 2, 2, 1, 0]] * 0.5 + 0.5 / 3  # predicted: 0 1 2 2 1 0
    got = scoring.out_of_distribution(cal, emb, ["photometry"], probs, numbers)
    head = 100 * np.array(
        [np.mean(ood.reference_scores < s) for s in ood.score(emb["photometry"])]
    )
    lc = 100 * np.array(
        [
            np.mean(density.reference_scores < s)
            for s in density.score(numbers, [0, 1, 2, 2, 1, 0])
        ]
    )
    want = np.where(np.isnan(lc), head, np.maximum(head, lc))
    assert got.method == "mahalanobis+light_curve_numbers"
    np.testing.assert_allclose(got.score, want)
    np.testing.assert_allclose(got.percentile, want)
    assert got.percentile[2] == head[2]
    alone = scoring.out_of_distribution(cal, emb, ["photometry"], probs, None)
    assert alone.method == "mahalanobis"
    np.testing.assert_allclose(alone.score, ood.score(emb["photometry"]))
