"""Probabilities that know when they do not know: the numbers, in NumPy.

- Temperature scaling (Guo et al. 2017): one T > 0 fitted on the validation
  split by minimising the negative log-likelihood of softmax(logits / T); it
  changes confidence, never the predicted class.
- Expected calibration error: |accuracy - confidence| averaged over
  ECE_BINS equal-width confidence bins, weighted by their share of objects.
- Out-of-distribution score: the squared Mahalanobis distance of an
  object's embedding to the nearest class mean of the training split, with
  one shared (shrunk) covariance (Lee et al. 2018). The embedding is what
  the classifier's head reads, made comparable: a single-modality
  classifier's L2-normalised encoder output, or a fused classifier's mean
  of the L2-normalised embeddings the object has. Reported with its
  percentile among the validation objects (all of known classes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

ECE_BINS = 15
SHRINKAGE = 0.1  # share of the covariance replaced by its mean variance
T_BOUNDS = (0.05, 20.0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return scipy.special.softmax(np.asarray(logits, np.float64) / temperature, -1)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / T)."""
    z = np.asarray(logits, np.float64) / temperature
    logp = z - scipy.special.logsumexp(z, axis=-1, keepdims=True)
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def fit_temperature(logits, labels) -> float:
    """The T in T_BOUNDS minimising the validation NLL (1.0 without objects)."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return 1.0
    res = scipy.optimize.minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=tuple(np.log(T_BOUNDS)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """sum_b n_b / N |accuracy_b - confidence_b| over equal-width bins of
    the top probability (right-closed; the first bin takes 0)."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return float("nan")
    conf = probs.max(axis=-1)
    right = np.argmax(probs, axis=-1) == labels
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(right[sel].mean() - conf[sel].mean())
    return float(total / len(labels))


def head_features(
    outputs: Mapping[str, np.ndarray], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features and (N,) bool 'has any': the mean of each object's
    present, L2-normalised modality embeddings (NaN rows are absent)."""
    stacked = np.stack([np.asarray(outputs[m], np.float64) for m in names])
    present = np.isfinite(stacked).all(axis=-1)
    count = present.sum(axis=0)
    total = np.where(present[..., None], stacked, 0.0).sum(axis=0)
    return total / np.maximum(count, 1)[:, None], count > 0


@dataclasses.dataclass(frozen=True)
class OutOfDistribution:
    """Class means and shared precision of the training split's features,
    and the validation scores that percentiles are taken against."""

    means: np.ndarray  # (C, D); NaN rows for classes without objects
    precision: np.ndarray  # (D, D)
    reference_scores: np.ndarray  # sorted validation scores

    @classmethod
    def fit(cls, features, labels, num_classes: int) -> OutOfDistribution:
        x = np.asarray(features, np.float64)
        labels = np.asarray(labels, np.int64)
        means = np.full((num_classes, x.shape[1]), np.nan)
        centred = np.empty_like(x)
        for c in range(num_classes):
            sel = labels == c
            if sel.any():
                means[c] = x[sel].mean(axis=0)
                centred[sel] = x[sel] - means[c]
        cov = centred.T @ centred / max(len(x), 1)
        scale = np.trace(cov) / len(cov)
        cov = (1 - SHRINKAGE) * cov + SHRINKAGE * scale * np.eye(len(cov))
        return cls(means, np.linalg.inv(cov), np.zeros(0))

    def score(self, features) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean."""
        x = np.asarray(features, np.float64)
        out = np.full(len(x), np.inf)
        for mu in self.means:
            if np.isfinite(mu).all():
                d = x - mu
                out = np.minimum(out, np.einsum("nd,de,ne->n", d, self.precision, d))
        return out

    def percentile(self, scores) -> np.ndarray:
        """Share (in %) of the validation objects scoring lower."""
        ref = self.reference_scores
        if not len(ref):
            return np.full(len(scores), np.nan)
        return 100.0 * np.searchsorted(ref, scores, side="left") / len(ref)

    def with_reference(self, scores) -> OutOfDistribution:
        return dataclasses.replace(self, reference_scores=np.sort(scores))


def auroc(negatives, positives) -> float:
    """P(a positive scores above a negative), ties counted half."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    ranks = scipy.stats.rankdata(np.concatenate([neg, pos]))
    r_pos = ranks[len(neg) :].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
