"""A rate-controlled event producer: what a producer app does, for the demo and load tests.

Sends ``rate`` events per second in 10 ms slices, never waiting for each send; a share
``bad_rate`` of the events is corrupted on purpose so dead-lettering is exercised.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from streams.generators import EventGenerator, corrupt, make_generator
from streams.spec import PipelineSpec

TICK_SECONDS = 0.01


@dataclass
class ProducerStats:
    sent: int = 0
    bad: int = 0


class EventProducer:
    def __init__(
        self,
        spec: PipelineSpec,
        bootstrap_servers: str,
        *,
        rate: float,
        bad_rate: float = 0.0,
        seed: int = 0,
        generator: EventGenerator | None = None,
    ) -> None:
        if rate <= 0:
            msg = f"producer rate must be positive, got {rate}"
            raise ValueError(msg)
        self.spec = spec
        self.rate = rate
        self.bad_rate = bad_rate
        self.stats = ProducerStats()
        self._generator = generator or make_generator(spec, seed)
        self._rng = random.Random(seed + 1)
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=2)

    async def run(
        self, stop: asyncio.Event, *, duration: float | None = None, count: int | None = None
    ) -> ProducerStats:
        """Produce until ``stop`` is set, ``duration`` seconds pass or ``count`` are sent."""
        await self._producer.start()
        try:
            started = time.monotonic()
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if duration is not None and elapsed >= duration:
                    break
                due = int(self.rate * elapsed) + 1 - self.stats.sent
                if count is not None:
                    due = min(due, count - self.stats.sent)
                if due > 0:
                    await self._send(due)
                if count is not None and self.stats.sent >= count:
                    break
                await asyncio.sleep(TICK_SECONDS)
            await self._producer.flush()
        finally:
            await self._producer.stop()
        return self.stats

    async def _send(self, n: int) -> None:
        topic = self.spec.input.topic
        id_field = self.spec.event.id_field
        deliveries = []
        for _ in range(n):
            event = self._generator.next_event(datetime.now(UTC))
            key = str(event[id_field]).encode()
            if self.bad_rate and self._rng.random() < self.bad_rate:
                value = corrupt(event, self.spec, self._rng)
                self.stats.bad += 1
            else:
                value = orjson.dumps(event)
            deliveries.append(await self._producer.send(topic, value, key=key))
            self.stats.sent += 1
        await asyncio.gather(*deliveries)
