"""A live summary of a pipeline's output topics, as a downstream consumer sees them.

Reads the predictions, dead-letter and monitoring topics (no consumer group, from the
beginning) and keeps counts, rates and the latency from each event's time to its
prediction's publish time (the Kafka timestamp the worker's producer stamped on the
record); the latest drift window per model (max column PSI and the score's, with their
level); the features' freshness over the last seconds (age per view from the
predictions' ``feature_age_seconds``, the stale share from their ``stale_views``); and,
given an actions topic (``demo --cycle``), the latest actions on the pipeline's models.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

import numpy as np
import orjson
from rich.table import Table
from rich.text import Text

from streams.cli.cycle import action_text
from streams.monitoring.reading import DriftHeadline
from streams.runtime.connections import KafkaConnection
from streams.scoring.validation import parse_timestamp
from streams.spec import PipelineSpec

WINDOW_SECONDS = 10.0
#: Actions the summary's "actions" rows show, the latest last.
ACTIONS_SHOWN = 4


@dataclass
class OutputCounts:
    predictions: int = 0
    dead_letters: int = 0
    unknown_entities: int = 0
    positive_decisions: int = 0
    dead_letter_reasons: collections.Counter[str] = field(default_factory=collections.Counter)


class Freshness:
    """Feature age per view and the stale share over the last ``WINDOW_SECONDS``, from the
    prediction records (what a downstream consumer sees)."""

    def __init__(self) -> None:
        self._ages: dict[str, collections.deque[tuple[float, float]]] = {}
        # (arrival time, stale) of predictions that say (the spec sets max_age_seconds)
        self._stale: collections.deque[tuple[float, bool]] = collections.deque()

    def take(self, now: float, document: dict[str, object]) -> None:
        ages = document.get("feature_age_seconds")
        if isinstance(ages, dict):
            for view, age in ages.items():
                if isinstance(age, (int, float)):  # null: the store had no row
                    self._ages.setdefault(str(view), collections.deque()).append((now, age))
        stale = document.get("stale_views")
        if isinstance(stale, list):
            self._stale.append((now, bool(stale)))
        self._expire(now)

    def _expire(self, now: float) -> None:
        since = now - WINDOW_SECONDS
        for ages in self._ages.values():
            while ages and ages[0][0] < since:
                ages.popleft()
        while self._stale and self._stale[0][0] < since:
            self._stale.popleft()

    def by_view(self) -> dict[str, tuple[float, float]]:
        """View -> (p50, max) age in seconds over the window."""
        out = {}
        for view, recent in sorted(self._ages.items()):
            if recent:
                ages = np.fromiter((age for _, age in recent), dtype=np.float64)
                out[view] = (float(np.percentile(ages, 50)), float(ages.max()))
        return out

    def stale_share(self) -> float | None:
        """The share of predictions with a stale view (None: the spec sets no limit)."""
        if not self._stale:
            return None
        return sum(stale for _, stale in self._stale) / len(self._stale)

    def text(self) -> str:
        views = self.by_view()
        parts = [f"{v} p50 {_age(p50)} max {_age(top)}" for v, (p50, top) in views.items()]
        share = self.stale_share()
        if share is not None:
            parts.append(f"stale {share:.1%}")
        return "; ".join(parts) or "-"


def _age(seconds: float) -> str:
    """An age people read at a glance: 42 s, 3.5 min, 2.1 h, 3.0 d."""
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


class LiveSummary:
    def __init__(
        self, spec: PipelineSpec, kafka: KafkaConnection, actions_topic: str | None = None
    ) -> None:
        self.spec = spec
        self.actions_topic = actions_topic
        # Every action record read, in order (a demo sees a handful).
        self.actions: list[dict[str, object]] = []
        self.counts = OutputCounts()
        self._kafka = kafka
        # (arrival monotonic time, latency seconds) of recent predictions, for p50/p99 and rates
        self._recent: collections.deque[tuple[float, float]] = collections.deque()
        self.freshness = Freshness()
        # The latest closed drift window per model, and how many windows were read.
        self.drift: dict[str, DriftHeadline] = {}
        self.drift_windows = 0

    async def run(self, stop: asyncio.Event) -> None:
        topics = [
            self.spec.output.topic,
            self.spec.output.dead_letter_topic,
            self.spec.monitoring_topic,
            *([self.actions_topic] if self.actions_topic else []),
        ]
        consumer = self._kafka.consumer(
            *topics,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await self._kafka.start(consumer)
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for partition, records in batches.items():
                    for record in records:
                        self._take(partition.topic, record.value, record.timestamp)
        finally:
            await consumer.stop()

    def _take(self, topic: str, value: bytes | None, timestamp_ms: int) -> None:
        document = orjson.loads(value or b"{}")
        if topic == self.actions_topic:
            if isinstance(document, dict):
                self.actions.append(document)
            return
        if topic == self.spec.monitoring_topic:
            headline = DriftHeadline.of(document)
            if headline is not None:  # other kinds of monitoring record: not in this view
                self.drift[headline.model] = headline
                self.drift_windows += 1
            return
        if topic == self.spec.output.dead_letter_topic:
            self.counts.dead_letters += 1
            self.counts.dead_letter_reasons[
                f"{document.get('stage')}/{document.get('reason')}"
            ] += 1
            return
        self.counts.predictions += 1
        if not document.get("entity_found", True):
            self.counts.unknown_entities += 1
        if document.get("decision"):
            self.counts.positive_decisions += 1
        latency = timestamp_ms / 1000.0 - parse_timestamp(document["event_time"])
        now = time.monotonic()
        self.freshness.take(now, document)
        self._recent.append((now, latency))
        while self._recent and self._recent[0][0] < now - WINDOW_SECONDS:
            self._recent.popleft()

    def latency_percentiles(self) -> tuple[float, float] | None:
        if not self._recent:
            return None
        latencies = np.fromiter((lat for _, lat in self._recent), dtype=np.float64)
        p50, p99 = np.percentile(latencies, [50, 99])
        return float(p50), float(p99)

    def prediction_rate(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        span = max(self._recent[-1][0] - self._recent[0][0], 1e-3)
        return len(self._recent) / span

    def table(self, elapsed: float, produced: int, worker_state: str) -> Table:
        counts = self.counts
        table = Table(title=f"streamscore demo - pipeline {self.spec.name}", show_header=False)
        table.add_column(justify="right", style="bold")
        table.add_column()
        table.add_row("elapsed", f"{elapsed:6.1f} s")
        table.add_row("worker", worker_state)
        table.add_row("events produced", f"{produced:,}")
        table.add_row("predictions", f"{counts.predictions:,}  ({self.prediction_rate():,.0f}/s)")
        table.add_row("  flagged unknown entity", f"{counts.unknown_entities:,}")
        table.add_row("  positive decisions", f"{counts.positive_decisions:,}")
        reasons = ", ".join(f"{r} {n}" for r, n in counts.dead_letter_reasons.most_common(4))
        table.add_row("dead letters", f"{counts.dead_letters:,}  {reasons}")
        table.add_row("in flight", f"{produced - counts.predictions - counts.dead_letters:,}")
        percentiles = self.latency_percentiles()
        latency = (
            "-"
            if percentiles is None
            else f"p50 {percentiles[0] * 1000:.1f} ms   p99 {percentiles[1] * 1000:.1f} ms"
        )
        table.add_row(f"latency (last {WINDOW_SECONDS:.0f} s)", latency)
        table.add_row(f"feature age (last {WINDOW_SECONDS:.0f} s)", self.freshness.text())
        for label, text in self.drift_rows():
            table.add_row(label, text)
        for label, line in self.actions_rows():
            table.add_row(label, line)
        return table

    def actions_rows(self) -> list[tuple[str, str]]:
        """The latest actions (none without an actions topic): the first row is labelled
        'actions' with the count so far, the others continue it."""
        if self.actions_topic is None:
            return []
        if not self.actions:
            return [("actions", "none yet")]
        latest = [action_text(record) for record in self.actions[-ACTIONS_SHOWN:]]
        labels = [f"actions ({len(self.actions)})", *[""] * (len(latest) - 1)]
        return list(zip(labels, latest, strict=True))

    def drift_rows(self) -> list[tuple[str, Text]]:
        """One row per model: its latest closed window's most drifted column and score PSI,
        coloured by level (the drift alert's condition is 'alert')."""
        if not self.drift:
            size = self.spec.monitoring.window.describe()
            return [("drift (PSI)", Text(f"no window closed yet (a window is {size})"))]
        colour = {"alert": "bold red", "warn": "yellow", "ok": "green"}
        return [
            (f"drift {model} (PSI)", Text(headline.text(), style=colour.get(headline.level, "")))
            for model, headline in sorted(self.drift.items())
        ]

    def line(self, elapsed: float, produced: int, worker_state: str) -> str:
        """The same figures on one line, for logs and terminals without live display."""
        percentiles = self.latency_percentiles()
        latency = (
            "-"
            if percentiles is None
            else f"p50={percentiles[0] * 1000:.1f}ms p99={percentiles[1] * 1000:.1f}ms"
        )
        c = self.counts
        return (
            f"[{elapsed:5.1f}s] worker={worker_state} produced={produced} "
            f"predictions={c.predictions} ({self.prediction_rate():.0f}/s) "
            f"dead_letters={c.dead_letters} unknown_entities={c.unknown_entities} latency {latency}"
            f" feature_age=[{self.freshness.text()}]"
            + "".join(f" drift_{m}=[{h.text()}]" for m, h in sorted(self.drift.items()))
            + "".join(f" action=[{text}]" for _, text in self.actions_rows())
        )
