"""What monitoring costs the scoring worker: CPU per event with the spec's monitoring on and
off (``monitoring.enabled``), at the same fixed rate, in alternating rounds.

Two real systems run side by side (the spec as it is, and the same with ``monitoring:
{enabled: false}``), each on its own topics, offered no labels so the figure is scoring's.
Each round offers the same constant rate to one, then the other, for the same seconds: an
idle neighbour weighs on both alike, and alternating spreads the machine's drift over both.
A worker's CPU per event is its own ``process_cpu_seconds_total`` over its
``streamscore_events_total`` in the phase (from its /metrics); the report gives the median
of each side and their difference, the figure issue 15 targets (<= 5 µs per event added).
"""

from __future__ import annotations

import statistics
from typing import Any

from load_tests.steps import StepResult


def cpu_us_per_event(step: StepResult) -> float | None:
    """The scoring workers' CPU µs per event taken in ``step`` (None without events)."""
    events = step.worker.get("events")
    cpu = step.worker.get("cpu_seconds")
    if not events or cpu is None:
        return None
    return 1e6 * cpu / events


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def summarize(
    on: list[StepResult], off: list[StepResult], rate: float, seconds: float
) -> dict[str, Any]:
    """The report's ``monitoring_cost`` section from the rounds' phases."""
    on_us = [cpu_us_per_event(step) for step in on]
    off_us = [cpu_us_per_event(step) for step in off]
    on_median, off_median = _median(on_us), _median(off_us)
    added = (
        round(on_median - off_median, 2)
        if on_median is not None and off_median is not None
        else None
    )
    return {
        "rate": rate,
        "seconds_per_phase": seconds,
        "rounds": [
            {
                "monitoring_on_cpu_us_per_event": None if a is None else round(a, 2),
                "monitoring_off_cpu_us_per_event": None if b is None else round(b, 2),
                "phases": [step_on.phase, step_off.phase],
            }
            for a, b, step_on, step_off in zip(on_us, off_us, on, off, strict=True)
        ],
        "scoring_cpu_us_per_event_monitoring_on": on_median,
        "scoring_cpu_us_per_event_monitoring_off": off_median,
        "monitoring_cpu_us_per_event_added": added,
        # The drift stage's own time per event (its histogram), on the monitoring side.
        "drift_stage_us_per_event": _median([s.worker.get("drift_us_per_event") for s in on]),
        "mean_batch_size": _median([s.worker.get("mean_batch_size") for s in on + off]),
    }


def markdown_lines(cost: dict[str, Any] | None) -> list[str]:
    """The report.md section (nothing when the run did not measure it)."""
    if not cost:
        return []

    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    lines = [
        "## Monitoring cost (scoring worker CPU per event, monitoring on vs off)",
        "",
        f"{cost['rate']:,.0f} events/s constant, {cost['seconds_per_phase']:g} s per phase,"
        " no labels offered; the spec as is vs `monitoring: {enabled: false}`, alternating.",
        "",
        "| round | on µs/event | off µs/event |",
        "| --- | ---: | ---: |",
    ]
    for i, row in enumerate(cost["rounds"], start=1):
        lines.append(
            f"| {i} | {f(row['monitoring_on_cpu_us_per_event'])} |"
            f" {f(row['monitoring_off_cpu_us_per_event'])} |"
        )
    lines += [
        f"| median | {f(cost['scoring_cpu_us_per_event_monitoring_on'])} |"
        f" {f(cost['scoring_cpu_us_per_event_monitoring_off'])} |",
        "",
        f"Added by monitoring: **{f(cost['monitoring_cpu_us_per_event_added'])} µs per event**"
        f" (target <= 5); the drift stage's own time {f(cost['drift_stage_us_per_event'])} µs"
        f" per event at a mean batch of {f(cost['mean_batch_size'])} events.",
        "",
    ]
    return lines
