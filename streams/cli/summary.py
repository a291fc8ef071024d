"""A live summary of a pipeline's output topics, as a downstream consumer sees them.

Reads the predictions and dead-letter topics (no consumer group, from the beginning) and
keeps counts, rates and the latency from each event's time to its prediction's publish
time (the Kafka timestamp the worker's producer stamped on the record).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

import numpy as np
import orjson
from rich.table import Table

from streams.runtime.connections import KafkaConnection
from streams.scoring.validation import parse_timestamp
from streams.spec import PipelineSpec

WINDOW_SECONDS = 10.0


@dataclass
class OutputCounts:
    predictions: int = 0
    dead_letters: int = 0
    unknown_entities: int = 0
    positive_decisions: int = 0
    dead_letter_reasons: collections.Counter[str] = field(default_factory=collections.Counter)


class LiveSummary:
    def __init__(self, spec: PipelineSpec, kafka: KafkaConnection) -> None:
        self.spec = spec
        self.counts = OutputCounts()
        self._kafka = kafka
        # (arrival monotonic time, latency seconds) of recent predictions, for p50/p99 and rates
        self._recent: collections.deque[tuple[float, float]] = collections.deque()

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._kafka.consumer(
            self.spec.output.topic,
            self.spec.output.dead_letter_topic,
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
        return table

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
        )
