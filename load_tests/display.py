"""The live view of a load run: overall progress, the current step, results so far.

On a terminal it is a rich ``Live`` display; piped (CI, logs) it prints one line every few
seconds instead.
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

LINE_SECONDS = 5.0


class Display:
    def __init__(self, console: Console, stages: int) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} stages"),
            TimeElapsedColumn(),
            console=console,
        )
        self._overall = self.progress.add_task("load run", total=stages)
        self.fields: dict[str, Any] = {}
        self.results: list[tuple[str, str]] = []
        self._live: Live | None = None
        self._printed = 0.0

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            self._live = Live(
                console=self.console, get_renderable=self._render, refresh_per_second=4
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def stage(self, description: str) -> None:
        self.progress.update(self._overall, description=description)
        self.fields = {}
        self.note(f"[bold]{description}[/bold]")

    def advance(self) -> None:
        self.progress.advance(self._overall)

    def result(self, name: str, text: str) -> None:
        self.results.append((name, text))
        self.note(f"  {name}: {text}")

    def note(self, text: str) -> None:
        self.console.print(text)

    def status(self, **fields: Any) -> None:
        self.fields.update(fields)
        if self._live is None and time.monotonic() - self._printed >= LINE_SECONDS:
            self._printed = time.monotonic()
            self.console.print("  " + self._line())

    def _line(self) -> str:
        f = self.fields
        parts = [f"{f.get('system', '')} {f.get('step', '')}"]
        if "elapsed" in f:
            parts.append(f"{f['elapsed']:.0f}/{f.get('seconds', 0):.0f} s")
        if "offered" in f:
            parts.append(f"offered {f['offered']:,.0f}/s  out {f.get('output', 0):,.0f}/s")
        if "backlog" in f:
            parts.append(f"backlog {f['backlog']:,}")
        p50, p99 = f.get("p50", math.nan), f.get("p99", math.nan)
        if not math.isnan(p50):
            parts.append(f"latency p50 {p50:.1f} ms p99 {p99:.1f} ms")
        return "  ".join(parts)

    def _render(self) -> Group:
        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(style="bold", justify="right")
        table.add_column()
        table.add_row("now", self._line())
        for name, text in self.results[-8:]:
            table.add_row(name, text)
        return Group(self.progress, table)
