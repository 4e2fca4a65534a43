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
- A second score on light-curve numbers (amplitude, log period,
  Lafler-Kinman statistic from `photometry_aux`, and whether the light
  curve holds a second period: data/lightcurve_modes.py;
  INPUT_DENSITY_CHANNELS of LIGHT_CURVE_NUMBERS): the negative
  log-likelihood under the training
  split's Gaussian of the class the classifier predicts (a Cepheid called
  RRAB has a period no RRAB has, though some EB has it; without a
  prediction, the most likely class's). A classifier's head features
  keep what tells its classes apart and can drop what marks a stranger (a
  Cepheid's 10-day period looks like an RR Lyrae's skewed curve to the
  head); the numbers themselves still show it. `combined_percentile` joins
  the two as the larger of their validation percentiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from astrom3_jax.data import schema

ECE_BINS = 15
# A light curve's numbers for the input density: its photometry_aux row
# (schema.PHOTOMETRY_AUX) and lightcurve_modes.second_period_logit.
LIGHT_CURVE_NUMBERS = (*schema.PHOTOMETRY_AUX, "second_period_logit")
# The columns the density reads: amplitude, log_period, lksl_statistic and
# the second period (double-mode pulsators; calibrations written before it
# existed read (0, 1, 2)). Not rfr_score (a user's star has none; predict
# fills the training mean), log10_mad or delta_t (brightness and the
# survey's time span: no class in them, and a user's download would look
# foreign for its baseline alone).
SECOND_PERIOD_CHANNEL = LIGHT_CURVE_NUMBERS.index("second_period_logit")
INPUT_DENSITY_CHANNELS = (0, 1, 2, SECOND_PERIOD_CHANNEL)
SHRINKAGE = 0.1  # share of the covariance replaced by its mean variance
MAX_HEAD_DIM = 128  # wider head features: their principal directions first
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
    and the validation scores that percentiles are taken against.

    Features wider than MAX_HEAD_DIM (a single-modality light-curve
    classifier's head reads the encoder's 6,400 flattened values) are first
    projected onto their MAX_HEAD_DIM principal directions on the training
    split: a 6,400 x 6,400 covariance from a few thousand objects is mostly
    shrinkage, and its precision alone would take 328 MB on disk."""

    means: np.ndarray  # (C, K); NaN rows for classes without objects
    precision: np.ndarray  # (K, K)
    reference_scores: np.ndarray  # sorted validation scores
    centre: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    basis: np.ndarray = dataclasses.field(  # (D, K); empty: features as they are
        default_factory=lambda: np.zeros((0, 0))
    )

    @classmethod
    def fit(cls, features, labels, num_classes: int) -> OutOfDistribution:
        x = np.asarray(features, np.float64)
        labels = np.asarray(labels, np.int64)
        centre, basis = np.zeros(0), np.zeros((0, 0))
        if x.shape[1] > MAX_HEAD_DIM:
            centre = x.mean(axis=0)
            _, _, vt = np.linalg.svd(x - centre, full_matrices=False)
            basis = vt[:MAX_HEAD_DIM].T
            x = (x - centre) @ basis
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
        return cls(means, np.linalg.inv(cov), np.zeros(0), centre, basis)

    def score(self, features) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean."""
        x = np.asarray(features, np.float64)
        if self.basis.size:
            x = (x - self.centre) @ self.basis
        out = np.full(len(x), np.inf)
        for mu in self.means:
            if np.isfinite(mu).all():
                d = x - mu
                out = np.minimum(out, np.einsum("nd,de,ne->n", d, self.precision, d))
        return out

    def percentile(self, scores) -> np.ndarray:
        """Share (in %) of the validation objects scoring lower."""
        return _percentile(self.reference_scores, scores)

    def with_reference(self, scores) -> OutOfDistribution:
        return dataclasses.replace(self, reference_scores=np.sort(scores))


@dataclasses.dataclass(frozen=True)
class InputDensity:
    """Per-class Gaussians (own covariance, shrunk) of the training split's
    light-curve numbers, and the validation scores for percentiles.

    `distance_only`: the score is the squared Mahalanobis distance to the
    class, without the log-determinant of its covariance. The percentiles
    pool stars predicted as every class; with the log-determinant a tight
    class (RRC) scores its strangers lower than a broad class (SR) scores
    its ordinary stars, while the distance alone follows one chi-square law
    for every class. Calibrations written before it (False) keep the
    likelihood their reference scores were computed with."""

    means: np.ndarray  # (C, K); NaN rows for classes without objects
    precisions: np.ndarray  # (C, K, K)
    log_dets: np.ndarray  # (C,)
    reference_scores: np.ndarray  # sorted validation scores
    channels: tuple[int, ...] = INPUT_DENSITY_CHANNELS  # columns of values read
    distance_only: bool = False

    @classmethod
    def fit(
        cls, values, labels, num_classes: int, channels=INPUT_DENSITY_CHANNELS
    ) -> InputDensity:
        """values: (N, V) rows (LIGHT_CURVE_NUMBERS for predict's score), of which
        `channels` are read; rows with a non-finite value there are left out."""
        channels = tuple(int(c) for c in channels)
        x = _columns(values, channels)
        labels = np.asarray(labels, np.int64)
        ok = np.isfinite(x).all(axis=1)
        x, labels = x[ok], labels[ok]
        k = x.shape[1]
        pooled = np.cov(x.T) if len(x) > 1 else np.eye(k)
        means = np.full((num_classes, k), np.nan)
        precisions = np.zeros((num_classes, k, k))
        log_dets = np.full(num_classes, np.nan)
        for c in range(num_classes):
            sel = labels == c
            if not sel.any():
                continue
            means[c] = x[sel].mean(axis=0)
            # Few objects: lean on the pooled covariance instead of a
            # singular one of their own.
            own = np.cov(x[sel].T) if sel.sum() > k + 1 else pooled
            cov = (1 - SHRINKAGE) * own + SHRINKAGE * np.diag(np.diag(pooled))
            precisions[c] = np.linalg.inv(cov)
            log_dets[c] = np.linalg.slogdet(cov)[1]
        return cls(means, precisions, log_dets, np.zeros(0), channels, True)

    def score(self, values, classes=None) -> np.ndarray:
        """The squared Mahalanobis distance (`distance_only`; else twice the
        negative log-likelihood, up to a constant) under each row's
        `classes` entry (the class the classifier predicts) where given,
        else under the most likely class; NaN for rows without finite
        values."""
        x = _columns(values, self.channels)
        nll = np.full((len(self.means), len(x)), np.inf)
        dist = np.full_like(nll, np.inf)
        for c, (mu, prec, log_det) in enumerate(
            zip(self.means, self.precisions, self.log_dets, strict=True)
        ):
            if np.isfinite(mu).all():
                d = x - mu
                dist[c] = np.einsum("nd,de,ne->n", d, prec, d)
                nll[c] = dist[c] + log_det
        rows = np.arange(len(x))
        likely = np.argmin(nll, axis=0)
        if classes is None:
            which = likely
        else:
            which = np.asarray(classes, np.int64)
            which = np.where(np.isinf(nll[which, rows]), likely, which)  # unfitted
        out = (dist if self.distance_only else nll)[which, rows]
        return np.where(np.isfinite(x).all(axis=1), out, np.nan)

    def percentile(self, scores) -> np.ndarray:
        return _percentile(self.reference_scores, scores)

    def with_reference(self, scores) -> InputDensity:
        scores = np.asarray(scores, np.float64)
        return dataclasses.replace(
            self, reference_scores=np.sort(scores[np.isfinite(scores)])
        )


def _columns(values, channels) -> np.ndarray:
    return np.asarray(values, np.float64).reshape(len(values), -1)[:, list(channels)]


def _percentile(reference, scores) -> np.ndarray:
    """Share (in %) of the reference scores below each score; NaN without a
    reference or for a NaN score."""
    scores = np.asarray(scores, np.float64)
    if not len(reference):
        return np.full(len(scores), np.nan)
    got = 100.0 * np.searchsorted(reference, scores, side="left") / len(reference)
    return np.where(np.isnan(scores), np.nan, got)


def combined_percentile(head_percentile, input_percentile) -> np.ndarray:
    """The larger of the two validation percentiles: a star is as unfamiliar
    as the more surprised of the two scores says (the head's alone where the
    star has no light-curve numbers)."""
    head = np.asarray(head_percentile, np.float64)
    inputs = np.asarray(input_percentile, np.float64)
    return np.where(np.isnan(inputs), head, np.fmax(head, inputs))


def auroc(negatives, positives) -> float:
    """P(a positive scores above a negative), ties counted half."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    ranks = scipy.stats.rankdata(np.concatenate([neg, pos]))
    r_pos = ranks[len(neg) :].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
