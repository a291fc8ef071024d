"""A rate-controlled event producer: what a producer app does, for the demo and load tests.

Sends ``rate`` events per second in 10 ms slices, never waiting for each send; a share
``bad_rate`` of the events is corrupted on purpose so dead-lettering is exercised. When the
spec declares labels and the generator knows the truth (``next_labelled``), each valid
event's label is sent ``label_delay`` seconds later to the labels topic, as a label source
(chargebacks, say) would. With a ``drift`` switch (streams/cli/drift_switch.py) chosen
fields are shifted from some seconds after the start, so drift can be seen on purpose.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from streams.cli.drift_switch import DriftSwitch, apply_shifts
from streams.cli.generators import EventGenerator, corrupt, make_generator
from streams.runtime.connections import KafkaConnection
from streams.spec import PipelineSpec

TICK_SECONDS = 0.01


@dataclass
class ProducerStats:
    sent: int = 0
    bad: int = 0
    labels: int = 0


class EventProducer:
    def __init__(
        self,
        spec: PipelineSpec,
        kafka: KafkaConnection,
        *,
        rate: float,
        bad_rate: float = 0.0,
        seed: int = 0,
        generator: EventGenerator | None = None,
        label_delay: float | None = None,
        label_share: float = 1.0,
        drift: DriftSwitch | None = None,
    ) -> None:
        if rate <= 0:
            msg = f"producer rate must be positive, got {rate}"
            raise ValueError(msg)
        if not 0.0 <= label_share <= 1.0:
            msg = f"producer label share must be within 0..1, got {label_share}"
            raise ValueError(msg)
        self.label_share = label_share
        self._started: float | None = None
        self.spec = spec
        self.rate = rate
        self.bad_rate = bad_rate
        self.stats = ProducerStats()
        self._generator = generator or make_generator(spec, seed)
        labelled = spec.labels is not None and hasattr(self._generator, "next_labelled")
        self.label_delay = label_delay if labelled else None
        # (due monotonic time, event id, label); the delay is constant, so FIFO order is due order
        self._pending_labels: collections.deque[tuple[float, str, int]] = collections.deque()
        self._rng = random.Random(seed + 1)
        self._kafka = kafka
        self._producer = kafka.producer(linger_ms=2)
        self.drift = drift

    async def run(
        self, stop: asyncio.Event, *, duration: float | None = None, count: int | None = None
    ) -> ProducerStats:
        """Produce until ``stop`` is set, ``duration`` seconds pass or ``count`` are sent."""
        await self._kafka.start(self._producer)
        try:
            started = self._started = time.monotonic()
            if self.drift is not None:
                self.drift.start()
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if duration is not None and elapsed >= duration:
                    break
                due = int(self.rate * elapsed) + 1 - self.stats.sent
                if count is not None:
                    due = min(due, count - self.stats.sent)
                if due > 0:
                    await self._send(due)
                await self._send_due_labels(flush=False)
                if count is not None and self.stats.sent >= count:
                    break
                await asyncio.sleep(TICK_SECONDS)
            await self._send_due_labels(flush=True)
            await self._producer.flush()
        finally:
            await self._producer.stop()
        return self.stats

    async def _send(self, n: int) -> None:
        topic = self.spec.input.topic
        id_field = self.spec.event.id_field
        deliveries = []
        now = datetime.now(UTC)
        # Whether the drift is on is decided once per batch, not per event (a clock read).
        shifts = self.drift.shifts if self.drift is not None and self.drift.on else None
        for _ in range(n):
            if self.label_delay is not None:
                event, label = self._generator.next_labelled(now)  # type: ignore[attr-defined]
            else:
                event, label = self._generator.next_event(now), None
            if shifts is not None:
                event = apply_shifts(shifts, event)
            key = str(event[id_field]).encode()
            if self.bad_rate and self._rng.random() < self.bad_rate:
                value = corrupt(event, self.spec, self._rng)
                self.stats.bad += 1
            else:
                value = orjson.dumps(event)
                labelled = self.label_share >= 1.0 or self._rng.random() < self.label_share
                if label is not None and self.label_delay is not None and labelled:
                    due_at = time.monotonic() + self.label_delay
                    self._pending_labels.append((due_at, str(event[id_field]), int(label)))
            deliveries.append(await self._producer.send(topic, value, key=key))
            self.stats.sent += 1
        await asyncio.gather(*deliveries)

    async def _send_due_labels(self, *, flush: bool) -> None:
        """Send labels whose delay has passed (all of them when ``flush``)."""
        if not self._pending_labels or self.spec.labels is None:
            return
        topic = self.spec.labels.topic
        now = time.monotonic()
        deliveries = []
        while self._pending_labels and (flush or self._pending_labels[0][0] <= now):
            _, event_id, label = self._pending_labels.popleft()
            record = {
                "event_id": event_id,
                "label": label,
                "label_time": datetime.now(UTC).isoformat(),
            }
            deliveries.append(
                await self._producer.send(topic, orjson.dumps(record), key=event_id.encode())
            )
            self.stats.labels += 1
        await asyncio.gather(*deliveries)

    def progress_line(self) -> str:
        """Events and labels sent so far, and the event rate achieved."""
        elapsed = 0.0 if self._started is None else time.monotonic() - self._started
        rate = self.stats.sent / elapsed if elapsed > 0 else 0.0
        pending = len(self._pending_labels)
        drifting = ""
        if self.drift is not None:
            drifting = f"; drift {'on' if self.drift.on else 'off'}: {self.drift.describe()}"
        return (
            f"produce: {self.stats.sent:,} events ({self.stats.bad:,} invalid),"
            f" {self.stats.labels:,} labels sent ({pending:,} waiting their delay),"
            f" {rate:,.0f} events/s over {elapsed:,.0f} s{drifting}"
        )


def labels_refusal(spec: PipelineSpec, delay: float, seed: int = 0) -> str | None:
    """Why the producer cannot send labels for ``spec`` (None if it can): labels come from
    the generator's ground truth, so the spec needs a labels topic and a generator that
    knows the truth (``next_labelled``)."""
    if delay < 0:
        return f"a delay is 0 or more seconds, got {delay:g}"
    if spec.labels is None:
        return f"pipeline {spec.name!r} declares no 'labels' topic to send them to"
    if not hasattr(make_generator(spec, seed), "next_labelled"):
        return (
            f"the spec's generator ({spec.generator or 'drawn from the schema'}) knows no"
            " ground truth: give it a next_labelled(now) -> (event, label) method"
        )
    return None
