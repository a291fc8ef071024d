"""Adaptive micro-batches from a Faust stream's channel, for agents that ack events themselves.

Faust hands an agent one event per event-loop turn: its stream iterator sleeps (``sleep(0)``)
before every event, for fairness. On a loaded worker each loop turn also runs a slice of the
batch being processed, so events reached a batch at the rate of loop turns, not of the fetch:
at 2,000 events/s batches held ~20 events, every per-batch cost (the feature read's fixed
part, the prediction-store script, the model runs, the produce requests) was paid on those,
and seconds of lag built up with the worker's CPU not saturated (measured with a trace of
batch sizes and fetches). Faust's ``noack_take`` has the same iterator underneath, and stops
filling while the agent processes a batch.

``micro_batches`` therefore takes events straight from the stream's channel queue (where
Faust's consumer puts them, a whole fetch at a time: streams/runtime/transport.py) and does per
event what Faust's iterator does: skip events from before a rebalance, track the message for the
consumer's commit bookkeeping, run the stream's processors, tell the sensors (once per
partition and batch). A batch is closed when it holds ``max_size`` events, or when its first
event has waited ``max_wait``; while the agent is busy, arrivals stay in the queue and the
next batch takes them all as soon as the agent has room (adaptive batching). The queue is bounded
(``stream_buffer_maxsize``): when it fills, Faust pauses fetching, so a backlog stays in
Kafka, not in memory. Acks stay with the agent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from faust.exceptions import Skip
from faust.types import TP, EventT
from mode.utils.futures import maybe_async


async def micro_batches(
    stream: Any,
    max_size: int,
    max_wait: float,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[list[EventT[Any]]]:
    """Yield lists of ``stream``'s events (not acked: the caller acks them).

    ``ready`` is awaited before a batch is taken (the agent has room for it): what arrives
    meanwhile joins that batch instead of waiting for the next one.
    """
    started_here = await stream.maybe_start()
    intake = _Intake(stream)
    batch: list[EventT[Any]] = []
    deadline = 0.0
    try:
        while not (stream.should_stop or intake.stopped):
            if not batch:
                await intake.wait_for_events()
                deadline = time.monotonic() + max_wait
            await intake.take(batch, max_size)
            remaining = deadline - time.monotonic()
            if batch and len(batch) < max_size and remaining > 0:
                await intake.wait_for_events(remaining)
                continue
            if not batch or intake.stopped:
                continue  # only stale events arrived (dropped by ``take``), or stopping
            if ready is not None:
                await ready()
                await intake.take(batch, max_size)  # what arrived while the agent was busy
            taken, batch = batch, []
            yield taken
        # Stopping: whatever is still in ``batch`` was never acked, so it is consumed again.
    finally:
        if started_here:
            await stream.stop()


class _Intake:
    """The stream's channel queue, read as Faust's stream iterator reads it."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.queue = stream.channel.queue
        self.app = stream.app
        self.acking_topics = stream.app.topics.acking_topics
        self.on_stream_event_in = stream.app.sensors.on_stream_event_in
        self.head: list[EventT[Any]] = []  # an event taken off the queue while waiting
        self.stopped = False  # Faust threw StopAsyncIteration into the channel (agent stop)

    async def wait_for_events(self, timeout: float | None = None) -> None:
        """Until an event is there, ``timeout`` passes or the stream stops."""
        if self.head or not self.queue.empty():
            return
        get = self.queue.get()
        # mode's wait_first: returns on the first to finish, the timeout or the stream
        # stopping, and cancels the rest (a cancelled get leaves the queue as it was).
        try:
            waited = await self.stream.wait_first(get, timeout=timeout)
        except StopAsyncIteration:
            self.stopped = True
            return
        if get in waited.done:
            self.head.append(waited.results[waited.done.index(get)])

    async def take(self, batch: list[EventT[Any]], max_size: int) -> None:
        """Move waiting events into ``batch``, up to ``max_size``, without waiting for more."""
        queue, processors = self.queue, self.stream._processors  # noqa: SLF001
        latest: dict[TP, EventT[Any]] = {}
        while len(batch) < max_size and (self.head or not queue.empty()):
            try:
                event = self.head.pop() if self.head else queue.get_nowait()
            except StopAsyncIteration:
                self.stopped = True
                break
            if not self._fresh(event):
                continue
            if processors and not await self._passes(event, processors):
                await self.stream.ack(event)  # filtered out: acked, as Faust does
                continue
            batch.append(event)
            latest[event.message.tp] = event
        # The sensors hear of each partition's latest event, not of every one: calling them
        # all per event cost 8% of a learning worker's CPU (py-spy). What Faust reads back,
        # the Monitor's time of the last event in per partition (its stall warnings), is kept.
        for tp, event in latest.items():
            self.on_stream_event_in(tp, event.message.offset, self.stream, event)

    async def _passes(self, event: EventT[Any], processors: list[Any]) -> bool:
        """The stream's processors (``Stream.add_processor``) see each value; one raising
        ``Skip`` filters the event out."""
        value = event.value
        try:
            for processor in processors:
                value = await maybe_async(processor(value))
        except Skip:
            return False
        return True

    def _fresh(self, event: EventT[Any]) -> bool:
        """What Faust's stream iterator does with each event before the agent sees it."""
        app, message = self.app, event.message
        if not app.flow_control.is_active() or (
            message.generation_id != app.consumer_generation_id
        ):
            return False  # fetched before a rebalance: Faust seeks back and delivers again
        if message.topic in self.acking_topics and not message.tracked:
            message.tracked = True
            app.consumer.track_message(message)  # pending until acked (commits, shutdown)
        return True
