"""Reading the monitoring topic's records, for people: the demo's live summary and
``streamscore health``.

The records are read as plain JSON and as generically as possible: a drift record's known
parts (``columns``, ``score``, ``thresholds``) get their own view, and any other top-level
section of numbers (a later kind of record, or a field added to this one) is still shown,
flattened to ``section.key`` -> number.

>>> record = {"kind": "drift", "model": "m", "model_version": 2, "events": 100,
...           "window_end": "2026-01-01T00:00:10.000000Z",
...           "thresholds": {"warn": 0.1, "alert": 0.25},
...           "columns": {"a": {"psi": 0.02, "level": "ok"}, "b": {"psi": 0.4, "level": "alert"}},
...           "score": {"psi": 0.12, "level": "warn"}, "quality": {"a": {"missing": 0.5}}}
>>> headline = DriftHeadline.of(record)
>>> headline.text()
'max b 0.400 alert, score 0.120 warn'
>>> numeric_sections(record)
{'quality': {'a.missing': 0.5}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from streams.monitoring.drift import level

#: Parts of a drift record shown by their own view, never as generic sections.
DRIFT_PARTS = frozenset(
    {"kind", "pipeline", "model", "model_version", "window_start", "window_end", "events",
     "thresholds", "columns", "score"}
)  # fmt: skip


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def psi_by_column(record: dict[str, Any]) -> dict[str, float]:
    """Each column's PSI in a drift record (columns without a numeric ``psi`` left out)."""
    columns = record.get("columns")
    if not isinstance(columns, dict):
        return {}
    out = {}
    for name, described in columns.items():
        value = _number(described.get("psi")) if isinstance(described, dict) else None
        if value is not None:
            out[str(name)] = value
    return out


def score_psi(record: dict[str, Any]) -> float | None:
    score = record.get("score")
    return _number(score.get("psi")) if isinstance(score, dict) else None


def level_of(value: float, thresholds: dict[str, Any]) -> str:
    """The drift monitor's levels (streams.monitoring.drift.level) from a record's
    thresholds: 'alert' above alert, 'warn' at or above warn, else 'ok'."""
    warn, alert = _number(thresholds.get("warn")), _number(thresholds.get("alert"))
    unset = math.inf  # a threshold the record lacks is never reached
    return level(value, unset if warn is None else warn, unset if alert is None else alert)


@dataclass(frozen=True)
class DriftHeadline:
    """A drift record in one line: its most drifted column and the score's PSI."""

    model: str
    column: str | None
    column_psi: float | None
    column_level: str
    score_psi: float | None
    score_level: str

    @classmethod
    def of(cls, record: dict[str, Any]) -> DriftHeadline | None:
        """None for a record that is not a drift record."""
        if record.get("kind") != "drift":
            return None
        thresholds = record.get("thresholds") or {}
        columns = psi_by_column(record)
        column = max(columns, key=columns.__getitem__) if columns else None
        top = columns[column] if column is not None else None
        score = score_psi(record)
        return cls(
            model=str(record.get("model", "?")),
            column=column,
            column_psi=top,
            column_level="-" if top is None else level_of(top, thresholds),
            score_psi=score,
            score_level="-" if score is None else level_of(score, thresholds),
        )

    @property
    def level(self) -> str:
        """The worse of the column's and the score's levels."""
        order = ("-", "ok", "warn", "alert")
        return max(self.column_level, self.score_level, key=order.index)

    def text(self) -> str:
        column = "-" if self.column_psi is None else f"{self.column_psi:.3f} {self.column_level}"
        score = "-" if self.score_psi is None else f"{self.score_psi:.3f} {self.score_level}"
        return f"max {self.column or '-'} {column}, score {score}"


def numeric_sections(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every top-level section of the record holding numbers, other than the drift parts:
    section -> flattened ``key.subkey`` -> number (bools, strings and lists left out)."""
    out: dict[str, dict[str, float]] = {}
    for section, value in record.items():
        if section in DRIFT_PARTS:
            continue
        flat: dict[str, float] = {}
        _flatten(value, "", flat)
        if flat:
            out[section] = flat
    return out


def _flatten(value: Any, prefix: str, out: dict[str, float]) -> None:
    number = _number(value)
    if number is not None:
        out[prefix or "value"] = number
    elif isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
