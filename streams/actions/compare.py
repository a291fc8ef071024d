"""A paired comparison of two models on the same labelled events: how much better the
candidate is than the champion in one metric, with a confidence interval.

Both models' scores on each event are the ones they *served* (kept by the learner as
evidence, ``streams.actions.evidence``), so the two figures differ only by the model, never by
the events. The gain is oriented so that positive means the candidate is better (for a
loss, champion minus candidate).

- ``accuracy``, ``log_loss``, ``mae``, ``rmse``: a **paired bootstrap**. Each resample draws
  n event indices with replacement, the same indices for both models (that is the pairing:
  it keeps what the two have in common, so a small but steady gain is seen). The indices are
  drawn as one matrix per block of resamples (numpy, no Python loop over events), from a
  generator seeded by the spec, so a decision repeats exactly. The interval is the
  percentile interval of the resampled gains.
- ``roc_auc``: **DeLong**'s paired test (DeLong, DeLong & Clarke-Pearson 1988, in the fast
  midrank form of Sun & Xu 2014): the variance of the AUC difference from the two models'
  placement values, a normal interval around it. Exact, no resampling, O(n log n).

>>> labels = np.array([0, 1] * 50, dtype=float)
>>> champion = np.where(labels == 1, 0.6, 0.4)  # right, but unsure
>>> candidate = np.where(labels == 1, 0.9, 0.1)  # right, and sure
>>> result = compare(PairedSample(labels, champion, candidate), "log_loss", resamples=500)
>>> round(result.champion, 3), round(result.candidate, 3), round(result.gain, 3)
(0.511, 0.105, 0.405)
>>> result.low > 0
True
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.actions.spec import LOWER_IS_BETTER, PromoteMetric
from streams.errors import StreamscoreError

Array = npt.NDArray[np.float64]
#: Most resampled indices held at once (blocks of resamples; ~32 MB of int64).
BLOCK_ENTRIES = 4_000_000
#: Scores are clamped this far from 0 and 1 in the log loss (as River's LogLoss does).
EPSILON = 1e-15


class ComparisonError(StreamscoreError):
    """The sample cannot give the metric (e.g. ROC AUC with one class only)."""


@dataclass(frozen=True)
class PairedSample:
    """Labels and the two models' served scores, one entry per event, aligned."""

    labels: Array
    champion: Array
    candidate: Array

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Comparison:
    metric: PromoteMetric
    method: str  # "paired bootstrap" or "DeLong"
    n: int
    champion: float  # the metric of each model on the sample
    candidate: float
    gain: float  # candidate better by (positive: better), in the metric's unit
    low: float  # the confidence interval of the gain
    high: float
    confidence: float


def compare(
    sample: PairedSample,
    metric: PromoteMetric,
    *,
    threshold: float = 0.5,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """The candidate's gain over the champion in ``metric`` on ``sample``, with its interval."""
    if len(sample) < 2:
        msg = f"compare: {len(sample)} paired labels; a comparison needs at least 2"
        raise ComparisonError(msg)
    if metric == "roc_auc":
        return _delong(sample, confidence)
    per_event = _PER_EVENT[metric]
    a = per_event(sample.champion, sample.labels, threshold)
    b = per_event(sample.candidate, sample.labels, threshold)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    if metric == "rmse":  # the root of a mean: both means per resample
        champion, candidate = float(np.sqrt(a.mean())), float(np.sqrt(b.mean()))
        means_a, means_b = _bootstrap_means([a, b], resamples, seed)
        gains = sign * (np.sqrt(means_b) - np.sqrt(means_a))
    else:  # a mean: the mean of the paired differences is the difference of the means
        champion, candidate = float(a.mean()), float(b.mean())
        (gains,) = _bootstrap_means([sign * (b - a)], resamples, seed)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(gains, [tail, 1.0 - tail])
    return Comparison(
        metric, "paired bootstrap", len(sample), champion, candidate,
        sign * (candidate - champion), float(low), float(high), confidence,
    )  # fmt: skip


def _accuracy(scores: Array, labels: Array, threshold: float) -> Array:
    correct: Array = ((scores >= threshold) == (labels == 1)).astype(np.float64)
    return correct


def _log_loss(scores: Array, labels: Array, threshold: float) -> Array:
    p = np.clip(scores, EPSILON, 1.0 - EPSILON)
    return -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))


def _absolute_error(scores: Array, labels: Array, threshold: float) -> Array:
    return np.abs(scores - labels)


def _squared_error(scores: Array, labels: Array, threshold: float) -> Array:
    return (scores - labels) ** 2


_PER_EVENT = {
    "accuracy": _accuracy,
    "log_loss": _log_loss,
    "mae": _absolute_error,
    "rmse": _squared_error,  # rooted after the mean
}


def served_figure(
    metric: PromoteMetric, scores: Array, labels: Array, threshold: float
) -> float | None:
    """One arm's ``metric`` on its own served ``scores`` against ``labels`` (no pairing, no
    interval: the guard's figure), from the same per-event terms and AUC as the comparison;
    None for ROC AUC with one class.

    >>> served_figure("log_loss", np.array([0.9, 0.1]), np.array([1.0, 0.0]), 0.5)
    0.1053605156578263
    >>> served_figure("roc_auc", np.array([0.9, 0.8]), np.array([1.0, 1.0]), 0.5) is None
    True
    """
    if metric == "roc_auc":
        positive = labels == 1
        if positive.all() or not positive.any():
            return None
        return float(_placements(scores, positive)[0])
    value = float(_PER_EVENT[metric](scores, labels, threshold).mean())
    return math.sqrt(value) if metric == "rmse" else value


def _bootstrap_means(columns: list[Array], resamples: int, seed: int) -> list[Array]:
    """The mean of each of ``columns`` over ``resamples`` resamples of the events, the same
    indices for every column (the pairing)."""
    rng = np.random.default_rng(seed)
    n = len(columns[0])
    out = [np.empty(resamples) for _ in columns]
    rows = max(1, BLOCK_ENTRIES // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        for column, means in zip(columns, out, strict=True):
            means[start:stop] = column[idx].mean(axis=1)
    return out


def _midranks(x: Array) -> Array:
    """1-based ranks, ties sharing their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def _placements(scores: Array, positive: npt.NDArray[np.bool_]) -> tuple[float, Array, Array]:
    """A model's AUC and its DeLong placement values on the positives and the negatives."""
    pos, neg = scores[positive], scores[~positive]
    m, n = len(pos), len(neg)
    ranks = _midranks(np.concatenate([pos, neg]))
    auc = (ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v_pos = (ranks[:m] - _midranks(pos)) / n  # share of negatives each positive beats
    v_neg = 1.0 - (ranks[m:] - _midranks(neg)) / m  # share of positives above each negative
    return float(auc), v_pos, v_neg


def _delong(sample: PairedSample, confidence: float) -> Comparison:
    positive = sample.labels == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        msg = (
            f"compare: roc_auc needs at least 2 labels of each class, got {m} positive and"
            f" {n} negative"
        )
        raise ComparisonError(msg)
    auc_a, pos_a, neg_a = _placements(sample.champion, positive)
    auc_b, pos_b, neg_b = _placements(sample.candidate, positive)
    s = np.cov(np.vstack([pos_a, pos_b])) / m + np.cov(np.vstack([neg_a, neg_b])) / n
    variance = max(float(s[0, 0] + s[1, 1] - 2.0 * s[0, 1]), 0.0)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
    gain = auc_b - auc_a
    half = z * variance**0.5
    return Comparison(
        "roc_auc", "DeLong", len(sample), auc_a, auc_b, gain, gain - half, gain + half, confidence
    )
