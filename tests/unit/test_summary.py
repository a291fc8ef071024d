"""The demo's live summary: drift and freshness rows from the records a consumer reads."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
from rich.console import Console

from streams.cli.summary import LiveSummary
from streams.spec import load_spec

SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"
spec = load_spec(SPEC)


def drift_record(amount: float, score: float, model: str = "fraud_gbt") -> bytes:
    return orjson.dumps(
        {
            "kind": "drift", "pipeline": spec.name, "model": model, "model_version": 1,
            "window_start": "2026-01-01T00:00:00.000000Z",
            "window_end": "2026-01-01T00:00:10.000000Z", "events": 10_000,
            "thresholds": {"warn": 0.1, "alert": 0.25},
            "columns": {"amount": {"psi": amount, "level": "?"},
                        "channel": {"psi": 0.01, "level": "ok"}},
            "score": {"psi": score, "level": "?"},
        }
    )  # fmt: skip


def prediction(age: float | None, stale: list[str] | None = None) -> bytes:
    record: dict[str, object] = {
        "event_id": "e", "score": 0.1, "entity_found": True,
        "feature_age_seconds": {"card_stats": age},
        "event_time": "2026-01-01T00:00:00.000000Z",
    }  # fmt: skip
    if stale is not None:
        record["stale_views"] = stale
    return orjson.dumps(record)


def rendered(summary: LiveSummary) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(summary.table(1.0, 10, "consuming"))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_latest_drift_window_shows_its_worst_column_and_the_score_with_levels() -> None:
    summary = LiveSummary(spec, kafka=None)  # type: ignore[arg-type]
    assert "no window closed yet (a window is 10,000 events)" in rendered(summary)
    summary._take(spec.monitoring_topic, drift_record(0.02, 0.05), 0)
    assert "max amount 0.020 ok, score 0.050 ok" in rendered(summary)
    summary._take(spec.monitoring_topic, drift_record(1.5, 0.12), 0)
    table = rendered(summary)
    assert "drift fraud_gbt (PSI)" in table
    assert "max amount 1.500 alert, score 0.120 warn" in table
    assert "0.020" not in table  # only the latest window
    assert summary.drift_windows == 2
    assert "drift_fraud_gbt=[max amount 1.500 alert, score 0.120 warn]" in summary.line(1, 1, "x")
    # Another kind of monitoring record is not a drift window.
    summary._take(spec.monitoring_topic, orjson.dumps({"kind": "quality", "model": "x"}), 0)
    assert summary.drift_windows == 2 and set(summary.drift) == {"fraud_gbt"}


def test_feature_age_per_view_and_the_stale_share() -> None:
    summary = LiveSummary(spec, kafka=None)  # type: ignore[arg-type]
    for age in (10.0, 20.0, 30.0, None):  # None: the store had no row
        summary._take(spec.output.topic, prediction(age), 1_767_225_600_000)
    assert summary.freshness.by_view() == {"card_stats": (20.0, 30.0)}
    assert summary.freshness.stale_share() is None  # the spec sets no max_age_seconds
    assert "card_stats p50 20 s max 30 s" in rendered(summary)
    summary._take(spec.output.topic, prediction(7200.0, ["card_stats"]), 1_767_225_600_000)
    summary._take(spec.output.topic, prediction(60.0, []), 1_767_225_600_000)
    assert summary.freshness.stale_share() == 0.5
    assert "card_stats p50 30 s max 2.0 h; stale 50.0%" in summary.line(1, 1, "x")
