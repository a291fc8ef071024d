"""A pipeline's health from what its workers wrote: the monitoring records (drift windows,
and whatever other sections or kinds they carry) and the tail of the predictions (feature
freshness). Plain data, built from JSON documents, for ``streamscore health`` to render.

>>> window = {"kind": "drift", "model": "m", "model_version": 1, "events": 10,
...           "window_end": "2026-01-01T00:00:10.000000Z",
...           "thresholds": {"warn": 0.1, "alert": 0.25},
...           "columns": {"a": {"psi": 0.3}}, "score": {"psi": 0.01}}
>>> report = HealthReport.build([window], [{"feature_age_seconds": {"v": 5.0}}])
>>> report.models["m"].psi["a"], report.models["m"].score
([0.3], [0.01])
>>> report.freshness[0].view, report.freshness[0].p50
('v', 5.0)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.monitoring.reading import level_of, numeric_sections, psi_by_column, score_psi


@dataclass
class ModelDrift:
    """One model's drift windows, oldest first (as read from the topic)."""

    model: str
    windows: list[dict[str, Any]] = field(default_factory=list)  # the records themselves
    psi: dict[str, list[float | None]] = field(default_factory=dict)  # column -> per window
    score: list[float | None] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        n = len(self.windows)
        self.windows.append(record)
        for column, value in psi_by_column(record).items():
            self.psi.setdefault(column, [None] * n).append(value)
        for series in self.psi.values():  # a column this window lacks
            if len(series) == n:
                series.append(None)
        self.score.append(score_psi(record))

    @property
    def thresholds(self) -> dict[str, Any]:
        return dict(self.windows[-1].get("thresholds") or {}) if self.windows else {}

    def level(self, value: float | None) -> str:
        return "-" if value is None else level_of(value, self.thresholds)

    def sections(self, last: int) -> dict[str, dict[str, list[float | None]]]:
        """Every other numeric section of the last ``last`` windows (a field another part
        of the monitor added): section -> key -> value per window."""
        windows = self.windows[-last:]
        out: dict[str, dict[str, list[float | None]]] = {}
        for i, record in enumerate(windows):
            for section, values in numeric_sections(record).items():
                keys = out.setdefault(section, {})
                for key, value in values.items():
                    keys.setdefault(key, [None] * len(windows))[i] = value
        return out


@dataclass(frozen=True)
class ViewFreshness:
    """Feature age at event time of one view over the predictions read."""

    view: str
    predictions: int  # with a row of this view (an age)
    missing: int  # without (the store had no row: null age)
    p50: float
    p95: float
    max: float


@dataclass
class HealthReport:
    models: dict[str, ModelDrift]
    other_kinds: dict[str, dict[str, Any]]  # kind -> its latest record (not drift)
    freshness: list[ViewFreshness]
    stale_share: float | None  # None: the predictions carry no stale_views (no limit set)
    predictions: int
    records: int

    @classmethod
    def build(
        cls, monitoring: list[dict[str, Any]], predictions: list[dict[str, Any]]
    ) -> HealthReport:
        models: dict[str, ModelDrift] = {}
        others: dict[str, dict[str, Any]] = {}
        for record in sorted(monitoring, key=lambda r: str(r.get("window_end", ""))):
            kind = str(record.get("kind", "?"))
            if kind == "drift":
                model = str(record.get("model", "?"))
                models.setdefault(model, ModelDrift(model)).add(record)
            else:
                others[kind] = record
        freshness, stale = _freshness(predictions)
        return cls(models, others, freshness, stale, len(predictions), len(monitoring))


def _freshness(
    predictions: list[dict[str, Any]],
) -> tuple[list[ViewFreshness], float | None]:
    ages: dict[str, list[float]] = defaultdict(list)
    missing: dict[str, int] = defaultdict(int)
    stale = flagged = 0
    for record in predictions:
        by_view = record.get("feature_age_seconds")
        if isinstance(by_view, dict):
            for view, age in by_view.items():
                if isinstance(age, (int, float)) and not isinstance(age, bool):
                    ages[str(view)].append(float(age))
                else:
                    missing[str(view)] += 1
        views = record.get("stale_views")
        if isinstance(views, list):
            flagged += 1
            stale += bool(views)
    out = []
    for view in sorted({*ages, *missing}):
        values = np.asarray(ages.get(view, []), dtype=np.float64)
        p50, p95, top = (
            (
                float(np.percentile(values, 50)),
                float(np.percentile(values, 95)),
                float(values.max()),
            )
            if values.size
            else (float("nan"),) * 3
        )
        out.append(ViewFreshness(view, int(values.size), missing.get(view, 0), p50, p95, top))
    return out, (stale / flagged if flagged else None)
