"""The load test's monitoring-cost figure: the scoring worker's CPU per event with the spec's
monitoring on minus off, its report line and target (computed here on synthetic phases; the
load test itself runs on a quiet machine)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from load_tests import monitoring_cost
from load_tests.config import MONITORING_OFF, MONITORING_ON, PROFILES, TARGETS
from load_tests.environment import Environment
from load_tests.markdown import markdown
from load_tests.report import build_report
from load_tests.run import parse_args
from load_tests.session import SYSTEMS
from load_tests.steps import StepResult
from load_tests.traffic import Pattern
from streams.settings import Settings
from streams.spec import load_spec

SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"


def phase(system: str, number: int, cpu_seconds: float, events: int = 16_000) -> StepResult:
    """A fixed-rate phase whose scoring worker used ``cpu_seconds`` for ``events``."""
    return StepResult(
        system=system, label=f"round {number}", phase=number, pattern=Pattern("constant", 2000.0),
        planned_seconds=8.0, start=0.0, end=8.0, sent=events, acked=events, failed=0, kinds={},
        achieved_rate=2000.0, output_rate=2000.0, output_rate_median=2000.0, backlog_start=0,
        backlog_end=0, backlog_max=10, backlog_slope=0.0, bounded=None, stopped_early=False,
        generator_limited=False, latency_ms={}, generator_lag_ms={}, cpu_percent={},
        worker={"events": float(events), "cpu_seconds": cpu_seconds, "mean_batch_size": 36.0,
                "drift_us_per_event": 1.1, "quality_us_per_event": 0.4},
    )  # fmt: skip


ON = [phase(MONITORING_ON, 1, 2.40), phase(MONITORING_ON, 4, 2.432), phase(MONITORING_ON, 5, 2.6)]
OFF = [
    phase(MONITORING_OFF, 2, 2.368),
    phase(MONITORING_OFF, 3, 2.336),
    phase(MONITORING_OFF, 6, 2.9),
]


def test_cpu_per_event_is_the_workers_cpu_over_its_events() -> None:
    assert monitoring_cost.cpu_us_per_event(ON[0]) == pytest.approx(150.0)  # 2.4 s / 16,000
    assert monitoring_cost.cpu_us_per_event(phase(MONITORING_ON, 1, 1.0, events=0)) is None


def test_the_added_cost_is_the_median_of_the_rounds_differences() -> None:
    cost = monitoring_cost.summarize(ON, OFF, rate=2000.0, seconds=8.0)
    # on: 150, 152, 162.5 µs; off: 148, 146, 181.25; rounds' differences 2, 6, -18.75
    assert cost["scoring_cpu_us_per_event_monitoring_on"] == 152.0
    assert cost["scoring_cpu_us_per_event_monitoring_off"] == 148.0
    assert cost["monitoring_cpu_us_per_event_added"] == 2.0
    assert cost["added_range"] == [-18.75, 6.0]
    assert cost["rounds"][0] == {
        "monitoring_on_cpu_us_per_event": 150.0,
        "monitoring_off_cpu_us_per_event": 148.0,
        "added_cpu_us_per_event": 2.0,
        "phases": [1, 2],
    }
    assert cost["monitoring_stages_us_per_event"] == 1.5  # drift 1.1 + quality 0.4
    # A side with no figure (no events counted) gives no difference, not a wrong one.
    empty = [phase(MONITORING_OFF, 2, 1.0, events=0)]
    alone = monitoring_cost.summarize(ON[:1], empty, 2000.0, 8.0)
    assert alone["monitoring_cpu_us_per_event_added"] is None and alone["added_range"] is None


def test_a_creep_over_the_run_cancels_out_of_alternating_rounds() -> None:
    """Every phase costs 1 µs per event more than the one before it, and monitoring adds 3:
    the difference of the sides' medians is off by the creep, the rounds' median is not."""
    on, off = [], []
    for round_number in range(1, 7):
        first, second = (2 * round_number - 1, 2 * round_number)
        on_phase, off_phase = (first, second) if round_number % 2 else (second, first)
        on.append(phase(MONITORING_ON, on_phase, 16_000 * (100 + on_phase + 3) / 1e6))
        off.append(phase(MONITORING_OFF, off_phase, 16_000 * (100 + off_phase) / 1e6))
    cost = monitoring_cost.summarize(on, off, rate=2000.0, seconds=8.0)
    assert cost["monitoring_cpu_us_per_event_added"] == pytest.approx(3.0)
    assert cost["added_range"] == pytest.approx([2.0, 4.0])


def test_the_report_has_the_target_and_the_markdown_section(tmp_path: Path) -> None:
    env = Environment(load_spec(SPEC), Settings(), tmp_path)
    cost = monitoring_cost.summarize(ON, OFF, rate=2000.0, seconds=8.0)
    report = build_report(
        env=env, profile=PROFILES["full"], started=time.time(), searches={}, systems=[],
        extras={"monitoring_cost": cost}, generator_bye={}, notes=[], memory_mb={},
    )  # fmt: skip
    (target,) = [t for t in report["targets"] if t["name"] == "monitoring_cpu_us_per_event_added"]
    assert (target["direction"], target["target"]) == TARGETS[target["name"]] == ("<=", 5.0)
    assert (target["measured"], target["met"]) == (2.0, True)
    assert report["monitoring_cost"] is cost
    text = markdown(report)
    (stages,) = [t for t in report["targets"] if t["name"] == "monitoring_stages_us_per_event"]
    assert (stages["measured"], stages["met"]) == (1.5, True)
    assert "| monitoring_cpu_us_per_event_added | <= 5 | 2.00 | yes |" in text
    assert "Added by monitoring: **2.0 µs per event** (target <= 5)" in text
    assert "which range from -18.8 to 6.0" in text
    assert "| median | 152.0 | 148.0 | 2.0 |" in text
    # Not measured (the tiny preset, or --only without it): no figure, no section.
    unmeasured = build_report(
        env=env, profile=PROFILES["tiny"], started=time.time(), searches={}, systems=[],
        extras={}, generator_bye={}, notes=[], memory_mb={},
    )  # fmt: skip
    (target,) = [t for t in unmeasured["targets"] if t["name"] == target["name"]]
    assert target["measured"] is None and target["met"] is None
    assert "Monitoring cost" not in markdown(unmeasured)


def test_the_run_can_ask_for_it_alone_and_the_presets_plan_it() -> None:
    assert "monitoring_cost" in SYSTEMS
    assert parse_args(["--only", "monitoring_cost"]).only == ["monitoring_cost"]
    assert PROFILES["full"].monitoring_cost is not None
    assert PROFILES["quick"].monitoring_cost is not None
    assert PROFILES["tiny"].monitoring_cost is None  # the smoke test's run is unchanged
