"""The fault suite's table, in the terminal and as markdown (README's Reliability section)."""

from __future__ import annotations

from rich.table import Table

from load_tests.faults.scenarios import Outcome

COLUMNS = (
    "scenario", "inputs", "predicted", "dead-lettered", "lost", "duplicated",
    "recovery s", "worker exits", "note",
)  # fmt: skip


def _row(outcome: Outcome) -> list[str]:
    recovery = "-" if outcome.recovery_seconds is None else f"{outcome.recovery_seconds:g}"
    return [
        outcome.scenario,
        f"{outcome.inputs:,}",
        f"{outcome.predicted:,}",
        f"{outcome.dead_lettered:,}",
        f"{outcome.lost:,}",
        f"{outcome.duplicated:,}",
        recovery,
        ", ".join(outcome.worker_exits) or "none",
        outcome.note,
    ]


def table(outcomes: list[Outcome], title: str | None = None) -> Table:
    out = Table(title=title)
    for column in COLUMNS:
        out.add_column(column, overflow="fold")
    for outcome in outcomes:
        out.add_row(*_row(outcome))
    return out


def markdown(outcomes: list[Outcome]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    lines += ["| " + " | ".join(_row(outcome)) + " |" for outcome in outcomes]
    return "\n".join(lines) + "\n"
