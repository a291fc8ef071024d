"""Every batch ends or the worker ends: a failed batch is one log line and a stop with
status 1; a stop is bounded; a signal-initiated stop that abandons work exits with 3."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from features.errors import FeatureStoreError
from streams.errors import BatchTimeout
from streams.runtime.lifecycle import (
    EXIT_BATCH_FAILED,
    EXIT_DRAIN_INCOMPLETE,
    EXIT_OK,
    Lifecycle,
)


class Exits:
    """Stands in for ``os._exit``: records the status the watchdog would exit with."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.called = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.called.set()


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
def lifecycle(exits: Exits):
    cycle = Lifecycle("unit", batch_timeout=5.0, shutdown_timeout=30.0, hard_exit=exits)
    stops: list[str] = []
    cycle.on_stop_request(lambda: stops.append("stop"))
    cycle.stops = stops  # type: ignore[attr-defined]
    yield cycle
    cycle.cancel_watchdog()


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "streams.runtime.lifecycle" and r.levelname == "ERROR"
    ]


async def test_a_failed_batch_is_one_line_and_stops_the_worker_with_status_1(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    async def read_features() -> None:
        raise FeatureStoreError("features.reader: online read of 3 keys failed: down")

    with pytest.raises(FeatureStoreError) as raised:
        await lifecycle.run_batch("score", 3, read_features())
    lifecycle.fail("score", raised.value)  # raised on to the agent: the same failure

    [line] = failures(caplog)
    message = line.getMessage()
    assert message.startswith("pipeline unit: stage score failed on a batch of 3 events, not acked")
    assert "FeatureStoreError: features.reader: online read of 3 keys failed: down" in message
    assert "exit status 1" in message
    assert line.exc_info is None  # our own errors say where in their message
    assert lifecycle.exit_code == EXIT_BATCH_FAILED and lifecycle.failed
    assert lifecycle.stops == ["stop"]  # type: ignore[attr-defined]
    assert "failed: stage score: FeatureStoreError" in lifecycle.health.readiness().reasons


async def test_an_unexpected_exception_keeps_its_traceback_in_the_same_line(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    async def learn() -> None:
        raise KeyError("vector_f32_b64")

    with pytest.raises(KeyError):
        await lifecycle.run_batch("learn", 7, learn())
    [line] = failures(caplog)
    assert line.exc_info is not None and line.exc_info[0] is KeyError


async def test_a_batch_past_its_timeout_fails_and_is_counted_stuck_until_then(
    exits: Exits, caplog: pytest.LogCaptureFixture
) -> None:
    lifecycle = Lifecycle("unit", batch_timeout=0.05, shutdown_timeout=30.0, hard_exit=exits)
    try:
        with pytest.raises(BatchTimeout, match="batch_timeout_seconds=0.05"):
            await lifecycle.run_batch("score", 1, asyncio.sleep(10))
    finally:
        lifecycle.cancel_watchdog()
    assert lifecycle.exit_code == EXIT_BATCH_FAILED
    assert "BatchTimeout" in failures(caplog)[0].getMessage()
    assert lifecycle.health.liveness().ok  # the batch ended: nothing is running any more


async def test_a_timeout_raised_by_the_work_itself_is_reported_as_it_is(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    async def client_call() -> None:
        raise TimeoutError("socket read timed out")

    with pytest.raises(TimeoutError, match="socket read"):
        await lifecycle.run_batch("labels", 2, client_call())
    assert "TimeoutError: socket read timed out" in failures(caplog)[0].getMessage()


async def test_an_agent_that_raises_fails_the_worker_and_faust_never_sees_it(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    lifecycle.health.expect_agent("labels")
    async with lifecycle.agent("labels"):
        assert "agents not running: labels" not in lifecycle.health.readiness().reasons
        raise RuntimeError("topic declaration refused")
    assert lifecycle.exit_code == EXIT_BATCH_FAILED
    assert "stage labels failed on its work" in failures(caplog)[0].getMessage()
    assert "agents not running: labels" in lifecycle.health.readiness().reasons


async def test_a_cancelled_batch_is_not_a_failure(lifecycle: Lifecycle) -> None:
    task = asyncio.ensure_future(lifecycle.run_batch("score", 1, asyncio.sleep(10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lifecycle.exit_code == EXIT_OK and not lifecycle.stopping


async def test_a_failure_during_a_signalled_stop_is_abandoned_work_not_a_new_stop(
    lifecycle: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    lifecycle.stop_requested("SIGTERM")
    lifecycle.fail("score", ConnectionError("producer closed"), events=4)
    assert failures(caplog) == []
    assert "while stopping" in caplog.records[-1].getMessage()
    assert lifecycle.exit_code == EXIT_DRAIN_INCOMPLETE
    assert lifecycle.stops == []  # type: ignore[attr-defined]  # Faust is stopping already


def test_the_drain_gets_half_the_shutdown_timeout_counted_from_the_stop(exits: Exits) -> None:
    now = [100.0]
    lifecycle = Lifecycle(
        "unit", batch_timeout=5.0, shutdown_timeout=10.0, clock=lambda: now[0], hard_exit=exits
    )
    try:
        assert lifecycle.drain_budget() == 5.0
        lifecycle.stop_requested("SIGTERM")
        now[0] += 3.0
        assert lifecycle.drain_budget() == 2.0
        now[0] += 3.0
        assert lifecycle.drain_budget() == 0.0
    finally:
        lifecycle.cancel_watchdog()


@pytest.mark.parametrize(
    ("failed", "status"), [(False, EXIT_DRAIN_INCOMPLETE), (True, EXIT_BATCH_FAILED)]
)
def test_a_stop_that_overruns_the_shutdown_timeout_ends_the_process(
    exits: Exits, caplog: pytest.LogCaptureFixture, failed: bool, status: int
) -> None:
    lifecycle = Lifecycle("unit", batch_timeout=5.0, shutdown_timeout=0.2, hard_exit=exits)
    if failed:
        lifecycle.fail("score", FeatureStoreError("down"), events=1)
    else:
        lifecycle.stop_requested("SIGTERM")
    assert exits.called.wait(5.0)
    assert exits.codes == [status]
    assert "did not stop within shutdown_timeout_seconds=0.2" in caplog.records[-1].getMessage()


def test_nothing_ends_the_process_before_a_stop_begins(exits: Exits) -> None:
    lifecycle = Lifecycle("unit", batch_timeout=5.0, shutdown_timeout=0.05, hard_exit=exits)
    assert not exits.called.wait(0.3)
    lifecycle.exiting()  # the process is exiting: from now on, bounded
    assert exits.called.wait(5.0) and exits.codes == [EXIT_DRAIN_INCOMPLETE]
