"""The Faust agent's micro-batching, with Faust's in-memory test context for the input
(the embedded broker only serves the output-topic declarations)."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

from streams.metrics import Metrics
from streams.runtime.app import Progress, attach_scoring_agent, create_app
from streams.scoring.records import InputMessage
from streams.settings import Settings
from tests.unit.test_pipeline import SPEC

pytestmark = pytest.mark.integration


class RecordingService:
    shadows: list[object] = []

    def __init__(self) -> None:
        self.batches: list[list[InputMessage]] = []
        self.changed = asyncio.Event()

    async def handle(self, messages: list[InputMessage]) -> None:
        self.batches.append(list(messages))
        self.changed.set()

    async def wait_for(self, total: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while sum(map(len, self.batches)) < total:
                self.changed.clear()
                await self.changed.wait()


async def test_batches_are_capped_at_max_size_and_flushed_by_max_wait(
    kafka_bootstrap: str, unique: str
) -> None:
    batch = SPEC.batch.model_copy(update={"max_size": 4, "max_wait_ms": 20})
    spec = SPEC.model_copy(update={"batch": batch, "name": f"batching-{unique}"})
    app = create_app(spec, Settings(kafka_bootstrap_servers=kafka_bootstrap))
    service = RecordingService()
    metrics = Metrics()
    agent = attach_scoring_agent(app, spec, service, Progress(spec, metrics))  # type: ignore[arg-type]
    app.sensors.add(app.monitor)  # as a started app does
    try:
        async with agent.test_context() as context:
            for i in range(10):
                await context.put(f"v{i}".encode(), key=f"k{i}".encode())
            await service.wait_for(10)  # the last 2 only come out through the max wait
    finally:
        await app.producer.stop()

    sizes = [len(b) for b in service.batches]
    assert max(sizes) <= 4 and sum(sizes) == 10
    values = [m.value for b in service.batches for m in b]
    assert values == [f"v{i}".encode() for i in range(10)]  # in order, none lost or repeated
    waits = metrics.registry.get_sample_value(
        "streamscore_batch_wait_seconds_count", {"pipeline": spec.name}
    )
    assert waits == len(service.batches)
    first = service.batches[0][0]
    assert first.topic == spec.input.topic and first.key == b"k0"
    # Faust's stall warnings read when a stream last took an event from each partition.
    taken_from = {TP(m.topic, m.partition) for b in service.batches for m in b}
    assert set(app.monitor.stream_inbound_time) == taken_from


class SlowFirstBatch(RecordingService):
    """Holds its first batch for ``hold`` seconds, recording when each batch started/ended."""

    def __init__(self, hold: float) -> None:
        super().__init__()
        self.hold = hold
        self.started: list[float] = []
        self.ended: list[float] = []
        self.holding = asyncio.Event()

    async def handle(self, messages: list[InputMessage]) -> None:
        loop = asyncio.get_running_loop()
        self.started.append(loop.time())
        if len(self.started) == 1:
            self.holding.set()
            await asyncio.sleep(self.hold)
        self.ended.append(loop.time())
        await super().handle(messages)


async def test_events_arriving_during_a_batch_are_taken_at_once_when_it_ends(
    kafka_bootstrap: str, unique: str
) -> None:
    """Adaptive batching: while the agent is busy, arrivals accumulate, and the next batch,
    taken as soon as it is free, holds them all, even those that waited longer than
    max_wait (not one batch per max_wait window)."""
    max_wait = 0.5
    batch = SPEC.batch.model_copy(update={"max_size": 100, "max_wait_ms": max_wait * 1000})
    spec = SPEC.model_copy(update={"batch": batch, "name": f"adaptive-{unique}"})
    app = create_app(spec, Settings(kafka_bootstrap_servers=kafka_bootstrap))
    service = SlowFirstBatch(hold=4 * max_wait)
    agent = attach_scoring_agent(app, spec, service, Progress(spec, Metrics()))  # type: ignore[arg-type]
    try:
        async with agent.test_context() as context:
            await context.put(b"first", key=b"k")
            await asyncio.wait_for(service.holding.wait(), 10)
            # wait=False: arrivals, not Faust's test harness waiting for each to be read
            for i in range(3):
                await context.put(f"early{i}".encode(), key=f"e{i}".encode(), wait=False)
            await asyncio.sleep(2 * max_wait)  # the early ones have waited past max_wait
            for i in range(3):
                await context.put(f"late{i}".encode(), key=f"l{i}".encode(), wait=False)
            await service.wait_for(7)
    finally:
        await app.producer.stop()

    assert [len(b) for b in service.batches] == [1, 6]
    assert service.started[1] - service.ended[0] < max_wait / 2
