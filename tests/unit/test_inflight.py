"""Batches in flight: acked in submission order, never more than the limit at once, and
nothing acked after a failed batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.scoring.inflight import InFlight


class Recorder:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.running = 0
        self.most_running = 0

    async def ack(self, events: Sequence[int]) -> None:
        self.acked.extend(events)

    async def submit(
        self, in_flight: InFlight[int], events: list[int], delay: float, fail: bool = False
    ) -> None:
        """What the agent does: wait for room, then start the batch's work."""
        await in_flight.reserve()
        in_flight.start(events, self.work(delay, fail))

    async def work(self, delay: float, fail: bool = False) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(delay)
            if fail:
                raise ValueError("feature store down")
        finally:
            self.running -= 1


@settings(max_examples=25, deadline=None)
@given(
    delays=st.lists(st.floats(min_value=0, max_value=0.003), min_size=1, max_size=12),
    limit=st.integers(min_value=1, max_value=5),
)
def test_batches_are_acked_in_order_and_never_more_than_limit_run(
    delays: list[float], limit: int
) -> None:
    async def scenario() -> Recorder:
        recorder = Recorder()
        in_flight: InFlight[int] = InFlight(limit, recorder.ack)
        for i, delay in enumerate(delays):
            await recorder.submit(in_flight, [2 * i, 2 * i + 1], delay)
        assert await in_flight.drain(timeout=5) == 0  # nothing abandoned
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.acked == list(range(2 * len(delays)))
    assert recorder.most_running <= limit


def test_later_batches_run_while_an_earlier_one_waits() -> None:
    async def scenario() -> Recorder:
        recorder = Recorder()
        in_flight: InFlight[int] = InFlight(3, recorder.ack)
        await recorder.submit(in_flight, [0], 0.05)
        await recorder.submit(in_flight, [1], 0.0)
        await recorder.submit(in_flight, [2], 0.0)
        await asyncio.sleep(0.01)
        assert recorder.acked == []  # 1 and 2 are done, but 0 is not: nothing is acked yet
        await in_flight.drain(timeout=5)
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.most_running == 3
    assert recorder.acked == [0, 1, 2]


def test_a_failed_batch_stops_acks_and_is_raised_to_the_agent() -> None:
    async def scenario() -> Recorder:
        recorder = Recorder()
        in_flight: InFlight[int] = InFlight(2, recorder.ack)
        await recorder.submit(in_flight, [0], 0.0)
        await recorder.submit(in_flight, [1], 0.01, fail=True)
        await recorder.submit(in_flight, [2], 0.0)  # done before 1 fails: never acked
        with pytest.raises(ValueError, match="feature store down"):
            for i in range(3, 100):
                await recorder.submit(in_flight, [i], 0.0)
        with pytest.raises(ValueError, match="feature store down"):
            await in_flight.drain(timeout=5)
        return recorder

    assert asyncio.run(scenario()).acked == [0]


def test_drain_gives_up_after_its_timeout_and_counts_what_it_abandoned() -> None:
    async def scenario() -> Recorder:
        recorder = Recorder()
        in_flight: InFlight[int] = InFlight(3, recorder.ack)
        await recorder.submit(in_flight, [0], 0.0)
        await recorder.submit(in_flight, [1], 30.0)
        await recorder.submit(in_flight, [2], 0.0)  # done, but waits for 1 to be acked
        assert await in_flight.drain(timeout=0.05) == 2
        assert recorder.running == 0  # the unfinished batch was cancelled, not left running
        return recorder

    assert asyncio.run(scenario()).acked == [0]
