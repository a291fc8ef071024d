"""Whether ``actions.retrain`` says to retrain now: plain functions over what the controller
read (the learner's label count and evaluation in Redis, the monitoring topic's drift
records). Each trigger that holds gives one reason, in words, for the ``retrain_started``
record.

>>> spec = RetrainSpec.model_validate({"every_labels": 100, "min_interval_seconds": 60})
>>> labels_reason(spec, labels=250, at_retrain=100)
'150 new labels since the last retrain (actions.retrain.every_labels: 100)'
>>> streak = DriftStreak(model="m", windows=2)
>>> for psi in (0.5, 0.05, 0.4, 0.3):
...     streak.add({"kind": "drift", "model": "m", "window_end": "2030-01-01T00:00:00Z",
...                 "thresholds": {"warn": 0.1, "alert": 0.25}, "score": {"psi": psi}},
...                since=None)
>>> streak.count, streak.reason()
(2, 'drift at alert level in 2 consecutive windows of m (actions.retrain.on_drift.windows: 2)')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from streams.actions.spec import LOWER_IS_BETTER, MetricFloor, RetrainSpec
from streams.monitoring.reading import level_of, psi_by_column, score_psi
from streams.scoring.validation import parse_timestamp


def labels_reason(spec: RetrainSpec, *, labels: int, at_retrain: int) -> str | None:
    """``every_labels``: enough joined labels since the last retrain."""
    if spec.every_labels is None:
        return None
    new = labels - at_retrain
    if new < spec.every_labels:
        return None
    return (
        f"{new} new labels since the last retrain (actions.retrain.every_labels:"
        f" {spec.every_labels})"
    )


def floor_reason(floor: MetricFloor | None, served: dict[str, float] | None) -> str | None:
    """``metric_floor``: the primary's served rolling metric (its snapshot in the learner's
    evaluation) worse than the floor, over at least ``min_labels`` labels."""
    if floor is None or not served:
        return None
    value, window = served.get(floor.metric), served.get("window_count", 0.0)
    if value is None or math.isnan(value) or window < floor.min_labels:
        return None
    worse = value > floor.value if floor.metric in LOWER_IS_BETTER else value < floor.value
    if not worse:
        return None
    side = "above" if floor.metric in LOWER_IS_BETTER else "below"
    return (
        f"served {floor.metric} {value:.4g} over {window:.0f} labels is {side} the floor"
        f" {floor.value:g} (actions.retrain.metric_floor)"
    )


def interval_left(spec: RetrainSpec, *, last_start: float | None, now: float) -> float:
    """Seconds before another retrain may start (0: it may)."""
    if last_start is None:
        return 0.0
    return max(0.0, last_start + spec.min_interval_seconds - now)


@dataclass
class DriftStreak:
    """Consecutive drift records of the primary ``model`` at alert level (its score's PSI
    or any column's), in the monitoring topic's order; records of other models and other
    kinds are ignored, and so are windows that ended before ``since`` (the last retrain's
    start: a retrain answers the drift seen so far)."""

    model: str
    windows: int
    count: int = 0

    def add(self, record: dict[str, Any], since: float | None) -> None:
        if record.get("kind") != "drift" or record.get("model") != self.model:
            return
        if since is not None and _ended(record) < since:
            return
        self.count = self.count + 1 if at_alert(record) else 0

    def reset(self) -> None:
        self.count = 0

    def reason(self) -> str | None:
        if self.count < self.windows:
            return None
        return (
            f"drift at alert level in {self.count} consecutive windows of {self.model}"
            f" (actions.retrain.on_drift.windows: {self.windows})"
        )


def at_alert(record: dict[str, Any]) -> bool:
    """A drift record whose score or any column is above its ``alert`` threshold."""
    thresholds = record.get("thresholds")
    if not isinstance(thresholds, dict):
        return False
    values = list(psi_by_column(record).values())
    score = score_psi(record)
    if score is not None:
        values.append(score)
    return any(level_of(value, thresholds) == "alert" for value in values)


def _ended(record: dict[str, Any]) -> float:
    try:
        return parse_timestamp(record.get("window_end"))
    except (ValueError, TypeError, OverflowError):
        return math.inf  # no readable time: count it (a record cannot predate nothing)
