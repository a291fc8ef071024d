"""Monitoring windows (``monitoring.window``): which rows of a batch fall in which window.

Every windowed monitor (drift, data quality) cuts the stream of scored batches the same way:
a window closes after exactly ``events`` scored events (a batch is split between two windows),
or with the first batch counted ``seconds`` or more after the window's first one (that batch
opens the next window). ``Windows.split`` says where the cuts fall; the monitor counts each
part of the batch into its open window and closes the window where told. Nothing here looks
at the rows themselves: one cut per window, however large the batch.

>>> from streams.monitoring.spec import WindowSpec
>>> windows, span = Windows(WindowSpec(events=4)), OpenWindow()
>>> [(rows.start, rows.stop, closes) for rows, closes in windows.split(span, 6, now=0.0)]
[(0, 4, True), (4, 6, False)]
>>> span.events
2
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from streams.monitoring.spec import WindowSpec


class Span(Protocol):
    """A monitor's open window: events counted in it, and the clock when its first and last
    events were counted."""

    events: int
    started: float
    last: float


@dataclass
class OpenWindow:
    """The plain ``Span`` (a monitor may keep the three fields on its own window object)."""

    events: int = 0
    started: float = 0.0
    last: float = 0.0


class Windows:
    """Where the windows of one spec's ``monitoring.window`` close."""

    def __init__(self, spec: WindowSpec) -> None:
        self.events = spec.events
        self.seconds = spec.seconds

    def split(self, span: Span, n: int, now: float) -> Iterator[tuple[slice, bool]]:
        """Cut a batch of ``n`` rows counted at ``now``: yields ``(rows, closes)`` in order.
        Count ``rows`` into the open window (``span`` already includes them), then, if
        ``closes``, close it, reading ``span``: the next step starts a new window (``span``
        is reset when the iteration resumes). A time window due before the batch closes
        first, as an empty part. ``n`` may be 0 (a batch of dead letters only): then only
        that first close can happen."""
        if self.seconds is not None and span.events and now - span.started >= self.seconds:
            yield slice(0, 0), True
            span.events = 0
        start = 0
        while start < n:
            take = n - start
            if self.events is not None:
                take = min(take, self.events - span.events)
            if not span.events:
                span.started = now
            span.events += take
            span.last = now
            closes = self.events is not None and span.events >= self.events
            yield slice(start, start + take), closes
            if closes:
                span.events = 0
            start += take
