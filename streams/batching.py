"""Adaptive micro-batches from a Faust stream, for agents that ack events themselves.

Faust's ``noack_take`` stops filling while the agent processes a batch (its buffer is read
in place, so the stream may add one event and then waits), and restarts its wait after each
batch. Under load, batches therefore held only what arrived in one ``max_wait`` window (about
20 events at saturation, measured) however long the backlog, and every per-batch cost (the
feature read's fixed part, the prediction-store script, the model runs, the produce requests)
was paid on those small batches.

``micro_batches`` keeps filling while the agent works: a batch is closed when it holds
``max_size`` events, or when its first event has waited ``max_wait``. So an idle pipeline
adds at most ``max_wait`` of latency, and a busy one takes, as soon as it is free, everything
that arrived meanwhile (adaptive batching). A full buffer makes the stream wait, which stops
Faust's consumer: the backlog stays in Kafka, not in memory.

It uses the same stream hooks as ``noack_take`` (a processor that buffers each event, and the
stream consumed passively in the background); acks stay with the agent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from faust.types import EventT


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
    buffer: list[EventT[Any]] = []
    first_at = 0.0  # monotonic time the oldest buffered event arrived
    has_events = asyncio.Event()
    full = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def add(value: Any) -> Any:
        nonlocal first_at
        event = stream.current_event
        if event is None:
            msg = "micro_batches: a value arrived without its event"
            raise RuntimeError(msg)
        buffer.append(event)
        if len(buffer) == 1:
            first_at = time.monotonic()
            has_events.set()
        if len(buffer) >= max_size:
            full.set()
            room.clear()
            await stream.wait(room)  # hold the stream (and Faust's consumer) until taken
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # events are acked by the agent, after their outputs
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # noqa: SLF001 - as noack_take does
    try:
        while not stream.should_stop:
            # mode's wait returns on the event, a timeout or the stream stopping (and reports
            # a timeout as "stopped"): ``should_stop`` is what tells them apart.
            await stream.wait_for_stopped(has_events)
            remaining = first_at + max_wait - time.monotonic()
            if remaining > 0 and not full.is_set():
                await stream.wait_for_stopped(full, timeout=remaining)
            if stream.should_stop or not buffer:
                continue  # stopping: what is buffered is not acked, so consumed again later
            if ready is not None:
                await ready()
            batch = buffer[:]  # taken and cleared with no await in between
            buffer.clear()
            has_events.clear()
            full.clear()
            room.set()
            yield batch
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)  # noqa: SLF001
