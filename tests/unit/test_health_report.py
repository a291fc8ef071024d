"""`streamscore health` on synthetic monitoring records and predictions: what the terminal
report says, what --out writes, and a clear error without matplotlib."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from streams.cli import health as health_cli
from streams.cli.health import HealthError, tables, write
from streams.cli.main import app
from streams.monitoring.health import HealthReport
from streams.spec import load_spec

SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"
spec = load_spec(SPEC)
PNG = b"\x89PNG\r\n\x1a\n"


def window(i: int, amount: float, score: float, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "drift", "pipeline": spec.name, "model": "fraud_gbt", "model_version": 1,
        "window_start": f"2026-01-01T00:00:{i * 10:02d}.000000Z",
        "window_end": f"2026-01-01T00:00:{i * 10 + 9:02d}.000000Z", "events": 10_000,
        "thresholds": {"warn": 0.1, "alert": 0.25},
        "columns": {"amount": {"psi": amount, "level": "?", "edges": [1.0, 2.0]},
                    "channel": {"psi": 0.01, "level": "ok", "shares": [0.5, 0.5]}},
        "score": {"psi": score, "level": "?"},
        **extra,
    }  # fmt: skip


MONITORING = [
    window(2, 1.5, 0.3, quality={"amount": {"missing_share": 0.02}, "events_per_second": 990}),
    window(0, 0.02, 0.01),  # out of order on the topic: sorted by window end
    window(1, 0.12, 0.05),
    {"kind": "estimate", "model": "fraud_gbt", "estimated": {"accuracy": 0.93}, "note": "x"},
]
PREDICTIONS = [
    {"feature_age_seconds": {"card_stats": age}, "stale_views": stale}
    for age, stale in ((10.0, []), (20.0, []), (7200.0, ["card_stats"]), (None, []))
]


def text_of(report: HealthReport, last: int = 6) -> str:
    console = Console(file=io.StringIO(), width=250)
    for table in tables(report, last):
        console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_drift_per_column_and_score_over_the_windows_with_levels() -> None:
    report = HealthReport.build(MONITORING, PREDICTIONS)
    drift = report.models["fraud_gbt"]
    assert drift.psi == {"amount": [0.02, 0.12, 1.5], "channel": [0.01, 0.01, 0.01]}
    assert drift.score == [0.01, 0.05, 0.3]
    text = text_of(report)
    amount = next(line for line in text.splitlines() if "amount" in line and "0.020" in line)
    assert "0.120" in amount and "1.500" in amount and amount.rstrip(" │").endswith("alert")
    score = next(line for line in text.splitlines() if line.startswith("│ score"))
    assert "0.300" in score and "alert" in score
    assert "00:00:29" in text  # the latest window's end, as a header
    # --windows 2: only the latest two windows.
    two = text_of(report, last=2)
    assert "0.020" not in two and "0.120" in two and "last 2 of 3 windows" in two


def test_other_numeric_sections_and_kinds_are_shown_generically() -> None:
    text = text_of(HealthReport.build(MONITORING, PREDICTIONS))
    assert "quality of fraud_gbt" in text
    assert "amount.missing_share" in text and "0.02" in text
    assert "events_per_second" in text and "990" in text
    assert "monitoring record 'estimate' (latest)" in text
    assert "accuracy" in text and "0.93" in text
    assert "note" not in text  # a string is not a number to show


def test_freshness_per_view_and_the_stale_share() -> None:
    report = HealthReport.build(MONITORING, PREDICTIONS)
    (view,) = report.freshness
    assert (view.view, view.predictions, view.missing, view.p50, view.max) == (
        "card_stats", 3, 1, 20.0, 7200.0,
    )  # fmt: skip
    assert report.stale_share == 0.25
    text = text_of(report)
    assert "feature freshness" in text and "25.0% with a stale view" in text
    assert "2.0 h" in text


def test_out_writes_markdown_and_png_plots(tmp_path: Path) -> None:
    report = HealthReport.build(MONITORING, PREDICTIONS)
    written = write(spec, report, 6, tmp_path / "health")
    names = sorted(p.name for p in written)
    assert names == ["drift_columns_fraud_gbt.png", "health.md", "score_psi_fraud_gbt.png"]
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG)
    markdown = (tmp_path / "health" / "health.md").read_text()
    assert "# Health of pipeline `card_fraud`" in markdown
    assert "| amount | 0.020 | 0.120 | 1.500 | alert |" in markdown
    assert "| score | 0.010 | 0.050 | 0.300 | alert |" in markdown
    assert "![drift_columns_fraud_gbt](drift_columns_fraud_gbt.png)" in markdown
    assert "| card_stats | 3 | 1 |" in markdown and "Stale share: 25.0%" in markdown
    assert "## Monitoring record `estimate` (latest)" in markdown


def test_out_without_matplotlib_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if absent
    report = HealthReport.build(MONITORING, PREDICTIONS)
    with pytest.raises(HealthError, match=r"need matplotlib.*streamscore\[health\]"):
        write(spec, report, 6, tmp_path)


def test_the_command_prints_the_report_and_writes_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_missing_topics(settings: Any, topics: list[str]) -> list[str]:
        return []

    monkeypatch.setattr("streams.runtime.reach.missing_topics", no_missing_topics)
    monkeypatch.setattr(
        health_cli, "read_health", lambda s, k: HealthReport.build(MONITORING, PREDICTIONS)
    )
    result = CliRunner().invoke(
        app, ["health", "--spec", str(SPEC), "--out", str(tmp_path), "--windows", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "drift of fraud_gbt" in result.output
    assert f"wrote {tmp_path / 'health.md'}" in result.output
    assert (tmp_path / "score_psi_fraud_gbt.png").exists()


def test_the_command_says_no_worker_ran_when_the_topic_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def all_missing(settings: Any, topics: list[str]) -> list[str]:
        return topics

    monkeypatch.setattr("streams.runtime.reach.missing_topics", all_missing)
    result = CliRunner().invoke(app, ["health", "--spec", str(SPEC)])
    assert result.exit_code == 1
    assert "health: no topic card_fraud-monitoring" in result.output
    assert "no worker has run this spec there yet" in result.output
