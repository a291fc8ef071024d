"""The primary's realized accuracy per window of prediction time, beside its estimate.

The scoring worker estimates each monitoring window's accuracy from the primary's scores
alone (``streams.monitoring.estimate``). The labels of those predictions arrive later; the
learner counts them per window of *prediction* time (``predicted_at``, kept by the
prediction store): windows ``monitoring.performance_bucket_seconds`` long, aligned on the
epoch (window ``k`` holds ``k * length <= predicted_at < (k + 1) * length``), so that every
learner, before or after a restart, cuts the same windows. Per window: the labelled
predictions, those right at the spec's threshold, and the estimate's sum over those same
predictions. The latest window with ``min_labels`` labels is the one published: its
realized accuracy and the estimate minus the realized accuracy. Both are over the same
events, so the difference is the calibration error of the decisions, not a difference of
samples (labels that arrive for only part of the predictions leave it fair as long as which
ones get a label does not depend on whether the model was right).

A scoring worker's own windows (the record's ``window_start``/``window_end``) start at its
first event, or count events; they overlap these windows rather than coincide with them.

>>> import numpy as np
>>> realized = RealizedAccuracy(bucket_seconds=60, min_labels=3)
>>> realized.update(np.array([0.0, 10.0, 59.0, 61.0]), np.array([0.9, 0.8, 0.3, 0.7]),
...                 np.array([1, 0, 0, 1]), threshold=0.5)
>>> window = realized.latest()
>>> window.start, window.labels, round(window.realized, 3), round(window.estimated, 3)
(0.0, 3, 0.667, 0.8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.errors import StreamscoreError
from streams.monitoring.estimate import expected_correct

_FORMAT = 1
#: Windows kept (the newest): labels for an older one are not counted.
KEPT_WINDOWS = 64


class RealizedStateError(StreamscoreError):
    """Stored realized-accuracy counts cannot be restored (not ours, another format)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"stored realized accuracy: {detail}")


@dataclass(frozen=True)
class Window:
    start: float  # Unix time the window of prediction time starts at
    labels: int
    realized: float  # share right at the threshold
    estimated: float  # the label-free estimate on the same predictions


class RealizedAccuracy:
    def __init__(self, bucket_seconds: float, min_labels: int) -> None:
        self.bucket_seconds = bucket_seconds
        self.min_labels = min_labels
        # window index -> [labels, right, sum of expected right]
        self._counts: dict[int, list[float]] = {}

    def update(
        self,
        predicted_at: npt.NDArray[np.float64],
        scores: npt.NDArray[np.float64],
        labels: npt.NDArray[Any],
        threshold: float,
    ) -> None:
        """Count a batch of the primary's labelled predictions (numpy over the batch)."""
        if not len(scores):
            return
        index = np.floor(predicted_at / self.bucket_seconds).astype(np.int64)
        right = (scores >= threshold) == (np.asarray(labels, dtype=np.float64) > 0.5)
        expected = expected_correct(scores, threshold)
        if (index == index[0]).all():  # the usual batch: labels of one window
            sums = [(int(index[0]), len(index), right.sum(), expected.sum())]
        else:
            windows, inverse = np.unique(index, return_inverse=True)
            n = np.bincount(inverse)
            hits = np.bincount(inverse, weights=right)
            exp = np.bincount(inverse, weights=expected)
            sums = list(zip(windows.tolist(), n, hits, exp, strict=True))
        for k, count, hit, exp_sum in sums:
            counts = self._counts.setdefault(k, [0, 0, 0.0])
            counts[0] += int(count)
            counts[1] += int(round(hit))
            counts[2] += float(exp_sum)
        for k in sorted(self._counts)[:-KEPT_WINDOWS]:
            del self._counts[k]

    def latest(self) -> Window | None:
        """The newest window with at least ``min_labels`` labels."""
        for k in sorted(self._counts, reverse=True):
            labels, right, expected = self._counts[k]
            if labels >= self.min_labels:
                n = int(labels)
                return Window(float(k * self.bucket_seconds), n, right / n, expected / n)
        return None

    def to_data(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "bucket_seconds": self.bucket_seconds,
            "windows": {str(k): v for k, v in sorted(self._counts.items())},
        }

    @classmethod
    def from_data(cls, data: Any, bucket_seconds: float, min_labels: int) -> RealizedAccuracy:
        """Restore ``to_data``'s counts; windows of another length (the spec changed) are
        not comparable: a new, empty count. Raises ``RealizedStateError`` on anything else."""
        restored = cls(bucket_seconds, min_labels)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            msg = f"not format {_FORMAT}"
            raise RealizedStateError(msg)
        if data.get("bucket_seconds") != bucket_seconds:
            return restored
        windows = data.get("windows")
        if not isinstance(windows, dict):
            msg = "'windows' is not an object"
            raise RealizedStateError(msg)
        for key, value in windows.items():
            try:
                k = int(key)
                labels, right, expected = (float(v) for v in value)
            except (TypeError, ValueError) as exc:
                msg = f"window {key!r}: {value!r} is not [labels, right, expected]"
                raise RealizedStateError(msg) from exc
            restored._counts[k] = [int(labels), int(right), expected]
        return restored
