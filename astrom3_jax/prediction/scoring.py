"""Numbers from predict's model outputs: class probabilities (temperature
scaled), an out-of-distribution score, each modality's own vote and,
against a reference export, nearest known stars with their class vote,
outlier and mislabel scores. The two k-NN scores' formulas are the analysis
ones (outliers.knn, mislabels.knn_disagreement): one definition of each,
chosen for per-star use as README's "Your own stars" explains."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from astrom3_jax.analysis import mislabels, outliers, store
from astrom3_jax.training import calibration


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of each row of logits / temperature, in float64."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Unfamiliarity:
    """Each star's out-of-distribution score (higher: less like the classes
    the model was trained on), its percentile among the validation objects
    (NaN without a calibration) and the method that gave it."""

    score: np.ndarray
    percentile: np.ndarray
    method: str


def out_of_distribution(
    cal, embeddings, names, probs, light_curve_numbers=None
) -> Unfamiliarity:
    """The calibration's scores (training/calibration.py): the Mahalanobis
    score of each star's head features and, where the calibration has one,
    the density of its light-curve numbers, joined as the larger of their
    validation percentiles (the score is then that percentile; the density
    is that of the class the star is predicted to be). A model
    without a calibration gets 1 - its top probability (maximum-softmax
    baseline) instead."""
    if cal is None:
        score = 1.0 - probs.max(axis=1)
        return Unfamiliarity(score, np.full(len(score), np.nan), "max_softmax")
    features, _ = calibration.head_features(embeddings, names)
    score = cal.ood.score(features)
    head = cal.ood.percentile(score)
    if cal.inputs is None or light_curve_numbers is None:
        return Unfamiliarity(score, head, "mahalanobis")
    predicted = np.argmax(probs, axis=1)
    inputs = cal.inputs.percentile(cal.inputs.score(light_curve_numbers, predicted))
    joined = calibration.combined_percentile(head, inputs)
    return Unfamiliarity(joined, joined, "mahalanobis+light_curve_numbers")


def modality_votes(model, embeddings, present, names) -> dict[str, np.ndarray]:
    """A fused classifier's class from each modality alone (its head on that
    modality's embedding, the others flagged absent); -1 where the star
    lacks the modality, {} for a model without a fusion head."""
    if not hasattr(model, "fuse"):
        return {}
    n = len(next(iter(present.values())))
    out = {}
    for m in names:
        emb = {k: jnp.asarray(np.nan_to_num(embeddings[k])) for k in names}
        flags = {k: jnp.full((n,), 1.0 if k == m else 0.0) for k in names}
        logits = np.asarray(model.fc(model.fuse(emb, flags)), np.float32)
        out[m] = np.where(present[m], np.argmax(logits, axis=1), -1)
    return out


@dataclasses.dataclass
class Neighbours:
    """Each star against the reference; -1 / NaN for a star without
    neighbours (no modality the reference has, or under 2 candidates)."""

    index: np.ndarray  # (N, k) rows of the reference split, -1: none
    cosine: np.ndarray  # (N, k)
    outlier: np.ndarray  # 1 - mean cosine to the k nearest
    percentile: np.ndarray  # of `outlier` among the reference's own scores
    vote: np.ndarray  # the most common class of the k nearest
    agreement: np.ndarray  # the share of the k nearest in `vote`
    mislabel: np.ndarray  # the share of the k nearest not of the star's label


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _mean_of(units: dict, names: Sequence[str], rows: np.ndarray) -> np.ndarray:
    return _unit(np.mean([units[m][rows] for m in names], axis=0))


def neighbours(
    ref: store.Split,
    embeddings: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    labels: np.ndarray,
    k: int,
    n_classes: int,
) -> Neighbours:
    """The k nearest reference objects of each star and the scores from them
    (`Nearest`, for one set of stars)."""
    return Nearest(ref, k, n_classes)(embeddings, present, labels)


class Nearest:
    """The k nearest reference objects of each star and the scores from them.

    A star is compared on the modalities it has: its embedding is the mean
    of those modalities' unit vectors, each reference object's the mean of
    the same ones (objects lacking one are no candidates). The percentile
    places the outlier score among every candidate's own (leave-self-out)
    score; 100: farther out than all of them. `labels`: -1 where none.

    Every score is the star's own given the reference, so stars can come in
    chunks (predict scores each chunk as it is run); what depends on the
    reference alone (its unit rows, each modality pattern's candidates and
    their own scores) is computed once and kept for the next chunk.
    """

    def __init__(self, ref: store.Split, k: int, n_classes: int):
        self.ref, self.k, self.n_classes = ref, k, n_classes
        self.units: dict[str, np.ndarray] = {}
        self.own: dict[tuple, np.ndarray] = {}  # pattern -> candidates' scores

    def __call__(
        self,
        embeddings: dict[str, np.ndarray],
        present: dict[str, np.ndarray],
        labels: np.ndarray,
    ) -> Neighbours:
        ref, k = self.ref, self.k
        names = list(embeddings)
        for m in names:
            if m not in self.units:
                self.units[m] = np.nan_to_num(ref.embeddings[m].astype(np.float64))
        units = {m: np.nan_to_num(embeddings[m].astype(np.float64)) for m in names}
        n = len(labels)
        pattern_of = [tuple(m for m in names if present[m][i]) for i in range(n)]
        idx = np.full((n, k), -1, np.int64)
        sims = np.full((n, k), np.nan)
        outlier = np.full(n, np.nan)
        percentile = np.full(n, np.nan)
        for pattern in sorted(set(pattern_of)):
            rows = np.flatnonzero([p == pattern for p in pattern_of])
            cand = np.flatnonzero(np.all([ref.present(m) for m in pattern], axis=0))
            if not pattern or len(cand) < 2:
                continue
            q = _mean_of(units, pattern, rows)
            c = _mean_of(self.units, pattern, cand)
            # At most len(cand) - 1: the candidates' own scores leave
            # themselves out, and a star's score is only comparable with the
            # same k.
            kk = min(k, len(cand) - 1)
            got_i, got_s, score = outliers.knn(c, q, kk)
            idx[rows, :kk], sims[rows, :kk] = cand[got_i], got_s
            outlier[rows] = score
            if pattern not in self.own:
                self.own[pattern] = outliers.knn_distance(c, None, kk)
            percentile[rows] = outliers.percentile_among(score, self.own[pattern])
        vote, agreement = class_votes(ref.labels, idx, self.n_classes)
        mislabel = mislabels.knn_disagreement(ref.labels, idx, labels)
        return Neighbours(idx, sims, outlier, percentile, vote, agreement, mislabel)


def class_votes(labels: np.ndarray, idx: np.ndarray, n_classes: int):
    """(k-NN class, fraction of the k neighbours in it) per star; -1 / NaN
    for a star without neighbours. Ties go to the lower class id."""
    vote = np.full(len(idx), -1, np.int64)
    frac = np.full(len(idx), np.nan)
    for i, row in enumerate(idx):
        row = row[row >= 0]
        if len(row):
            counts = np.bincount(labels[row], minlength=n_classes)
            vote[i] = int(np.argmax(counts))
            frac[i] = counts[vote[i]] / len(row)
    return vote, frac
