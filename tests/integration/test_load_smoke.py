"""The load tester end to end, in its tiny preset, on the session's broker, Redis and
prepared demo pipeline: every system runs, the report has every section, nothing is lost."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from load_tests.config import NAIVE, PASSTHROUGH, PROFILES, REAL, REAL_X2
from load_tests.environment import Environment
from load_tests.report import SECTIONS
from load_tests.session import run_load
from tests.integration.harness import PreparedPipeline

pytestmark = pytest.mark.integration


def test_tiny_load_run_reports_every_section_and_loses_nothing(
    card_fraud: PreparedPipeline, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = Environment(card_fraud.spec, card_fraud.settings, workdir)
    out = tmp_path / "report"
    console = Console(file=io.StringIO(), width=120)
    # Bounded: a step that never ends fails here instead of holding the suite (a minute on
    # a quiet machine; the bound is a hang guard, not a speed claim).
    report = asyncio.run(
        asyncio.wait_for(run_load(env, PROFILES["tiny"], out, console), timeout=300)
    )

    for section in SECTIONS:
        assert report.get(section) is not None, f"section {section!r} missing"
    for name in (PASSTHROUGH, NAIVE, REAL):
        assert report["comparison"][name]["phases"], f"no search steps for {name}"
    assert report["latency"]["latency_ms"]["n"] > 0
    assert report["latency_floor"]["latency_ms"]["n"] > 0  # the pass-through at that rate
    floor_steps = [
        step
        for step in report["steps"]
        if step["system"] == PASSTHROUGH and step["label"] == "latency"
    ]
    assert len(floor_steps) == 1
    assert floor_steps[0]["pattern"]["description"] == report["latency"]["pattern"]
    floor = {t["name"]: t["passthrough"] for t in report["targets"]}
    assert floor["p50_ms_at_2000_poisson"] == report["latency_floor"]["latency_ms"]["p50"]
    sustained = report["comparison"][PASSTHROUGH]
    step = next(s for s in report["steps"] if s["phase"] == sustained["sustained_phase"])
    cpu = sustained["worker_cpu_us_per_event"]
    assert cpu and set(cpu) == {k for k in step["cpu_percent"] if "worker" in k}
    for name, micros in cpu.items():  # CPU % of a core over the events that came out
        assert micros == pytest.approx(step["cpu_percent"][name] * 1e4 / step["output_rate"], 0.01)
    assert report["bursts"]["sent"] > 0
    scaling = report["scaling"]
    assert scaling["two_workers"]["phases"]
    # Two scoring workers split the input partitions between them, and each one's CPU per
    # event is reported against the single worker's.
    assert sorted(scaling["partitions_by_worker_two_workers"]) == [2, 2]
    assert len(scaling["scoring_cpu_us_per_event_two_workers"]) == 2
    one = scaling["scoring_cpu_us_per_event_one_worker"]
    two = max(scaling["scoring_cpu_us_per_event_two_workers"])
    # On a loaded machine a tiny step can read no CPU time for a worker (CI once saw 0.0):
    # the report then has no ratio, not a division by zero.
    assert scaling["scoring_cpu_two_workers_over_one"] == (
        round(two / one, 3) if one and two else None
    )
    assert report["run"]["settings"]["broker"]
    assert report["labels"]["sent"] > 0

    losses = report["losses"]
    assert set(losses["by_system"]) == {PASSTHROUGH, NAIVE, REAL, REAL_X2}
    assert losses["total_missing"] == 0, losses
    for name, row in losses["by_system"].items():
        assert row["sent"] > 0, name
        assert row["missing"] == row["failed_sends"] == row["misrouted"] == 0, (name, row)
        if name != PASSTHROUGH:  # valid events become predictions, invalid ones dead letters
            assert row["dead_letters"] == row["expected_dead_letters"] > 0, (name, row)
            outputs = row["predictions"] + row["dead_letters"] - row["duplicates"]
            assert outputs == row["sent"], (name, row)

    for name in ("report.json", "report.md", "throughput.png", "latency.png"):
        assert (out / name).stat().st_size > 0, name
    assert orjson.loads((out / "report.json").read_bytes())["losses"] == losses
    markdown = (out / "report.md").read_text()
    assert "## Comparison" in markdown and "CPU budget:" in markdown
