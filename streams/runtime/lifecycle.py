"""How a worker ends: every batch ends, or the worker does.

- **A failed batch stops the worker.** A batch that raises (anything but a bad event, which
  is already its own dead letter) or runs past ``batch_timeout_seconds`` is logged in ONE
  line (pipeline, stage, batch size, the exception), nothing of it is acked, and the worker
  stops at once with exit status 1: it leaves its consumer group, so whoever gets its
  partitions consumes the batch again.
- **A stop is bounded.** On SIGTERM/SIGINT (or after a failure) batches in flight get half
  of ``shutdown_timeout_seconds`` to deliver and be acked; what is not acked by then
  is abandoned (consumed again after a restart) and the exit status is 3. Whatever else is
  stuck (a producer that never answers, a thread holding up interpreter exit), a watchdog
  thread ends the process when ``shutdown_timeout_seconds`` is over.

Faust, left alone, does neither: it logs an agent's exception and restarts the agent, the
worker keeps heartbeating (its partitions are never reassigned), and a stop waits forever
for the failed batch's acks (``Consumer.wait_empty``). ``streams.runtime.app`` routes every agent
through ``agent`` and ``run_batch`` here, and ``streams.runtime.transport`` bounds ``wait_empty``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from streams.errors import BatchTimeout, StreamscoreError
from streams.runtime.health import Health

log = logging.getLogger(__name__)

T = TypeVar("T")

EXIT_OK = 0
#: A batch failed; the log line says which stage and why.
EXIT_BATCH_FAILED = 1
#: Stopped on a signal, but batches in flight were abandoned (consumed again after restart).
EXIT_DRAIN_INCOMPLETE = 3
#: Share of ``shutdown_timeout_seconds`` that batches in flight get to finish; the rest is
#: for committing offsets, stopping Faust's services and closing the event loop (Faust and
#: mode take ~2 s for that last part alone, measured).
DRAIN_SHARE = 0.5


class Lifecycle:
    """One worker's failure and stop policy (see the module docstring)."""

    def __init__(
        self,
        pipeline: str,
        *,
        batch_timeout: float,
        shutdown_timeout: float,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
        hard_exit: Callable[[int], object] = os._exit,
    ) -> None:
        self.pipeline = pipeline
        self.batch_timeout = batch_timeout
        self.shutdown_timeout = shutdown_timeout
        self.health = health if health is not None else Health(batch_timeout)
        self._clock = clock
        self._hard_exit = hard_exit
        self._request_stop: Callable[[], None] | None = None
        self._exit_code = EXIT_OK
        self._reported: BaseException | None = None
        self._stop_began: float | None = None
        self._watchdog: threading.Thread | None = None
        self._exited = threading.Event()  # set only by tests: a watchdog that must not fire

    def on_stop_request(self, stop: Callable[[], None]) -> None:
        """``stop`` starts the worker's graceful stop; called on the event loop."""
        self._request_stop = stop

    @property
    def exit_code(self) -> int:
        return self._exit_code

    @property
    def failed(self) -> bool:
        """A batch failed: its inputs will never be acked, nothing should wait for them."""
        return self._exit_code == EXIT_BATCH_FAILED

    @property
    def stopping(self) -> bool:
        return self._stop_began is not None

    def drain_budget(self) -> float:
        """Seconds batches in flight may still take to finish and be acked."""
        share = self.shutdown_timeout * DRAIN_SHARE
        if self._stop_began is None:
            return share
        return max(0.0, self._stop_began + share - self._clock())

    @contextlib.asynccontextmanager
    async def agent(self, stage: str) -> AsyncIterator[None]:
        """Run an agent's body: an exception escaping it fails the worker (and is not
        re-raised, so Faust neither logs it again nor restarts the agent)."""
        self.health.agent_running(stage, True)
        try:
            yield
        except Exception as exc:
            self.fail(stage, exc)
        finally:
            self.health.agent_running(stage, False)

    async def run_batch(self, stage: str, events: int, work: Awaitable[T]) -> T:
        """Await one batch's ``work`` within ``batch_timeout``; a failure fails the worker
        at once (then propagates, so the caller acks nothing)."""
        token = self.health.batch_started(stage)
        try:
            timeout = asyncio.timeout(self.batch_timeout)
            try:
                async with timeout:
                    return await work
            except TimeoutError as exc:
                if not timeout.expired():
                    raise  # raised by the work itself (a client's own timeout)
                msg = (
                    f"{stage}: batch did not finish within"
                    f" batch_timeout_seconds={self.batch_timeout:g}"
                )
                raise BatchTimeout(msg) from exc
        except Exception as exc:
            self.fail(stage, exc, events)
            raise
        finally:
            self.health.batch_finished(token)

    def fail(self, stage: str, exc: BaseException, events: int | None = None) -> None:
        """A batch (or an agent) failed: log it once, stop the worker with status 1."""
        if exc is self._reported:
            return  # the same failure again (raised on to the agent, or by a drain)
        self._reported = exc
        batch = f" a batch of {events} events" if events is not None else ""
        what = f"{type(exc).__name__}: {exc}"
        if self.stopping:
            # Stopping already (a signal, or an earlier failure): this batch is abandoned
            # with the rest, not a new reason to stop.
            self._exit_code = self._exit_code or EXIT_DRAIN_INCOMPLETE
            log.warning(
                "pipeline %s: stage %s failed on%s while stopping (not acked, consumed"
                " again after a restart): %s", self.pipeline, stage, batch or " its work", what,
            )  # fmt: skip
            return
        self._exit_code = EXIT_BATCH_FAILED
        # Our own errors carry their context in the message; anything else is a bug and
        # needs its traceback, in the same record.
        trace = None if isinstance(exc, StreamscoreError) else exc
        log.error(
            "pipeline %s: stage %s failed on%s, not acked (consumed again by whoever gets"
            " the partitions): %s; stopping the worker (exit status %d)",
            self.pipeline, stage, batch or " its work", what, EXIT_BATCH_FAILED,
            exc_info=trace,
        )  # fmt: skip
        self._begin_stop(f"failed: stage {stage}: {type(exc).__name__}")
        if self._request_stop is not None:
            self._request_stop()

    def stop_requested(self, reason: str) -> None:
        """A signal asked the worker to stop: start the clock on the stop."""
        if not self.stopping:
            self._begin_stop(f"stopping ({reason})")

    def abandoned(self, what: str) -> None:
        """Part of the drain did not complete (``what`` says which): exit status 3."""
        self._exit_code = self._exit_code or EXIT_DRAIN_INCOMPLETE
        log.warning(
            "pipeline %s: stopping without waiting longer for %s (not acked: consumed again"
            " after a restart)", self.pipeline, what,
        )  # fmt: skip

    def exiting(self) -> None:
        """The process is exiting: make sure nothing (a thread stuck in a client call)
        holds the exit up past the shutdown timeout."""
        if not self.stopping:
            self._begin_stop("exiting")

    def _begin_stop(self, reason: str) -> None:
        if self._stop_began is None:
            self._stop_began = self._clock()
        self.health.stopping(reason)
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._end_when_overdue, name="streamscore-shutdown-deadline", daemon=True
            )
            self._watchdog.start()

    def _end_when_overdue(self) -> None:
        if self._exited.wait(self.shutdown_timeout):
            return
        code = self._exit_code or EXIT_DRAIN_INCOMPLETE
        log.critical(
            "pipeline %s: the worker did not stop within shutdown_timeout_seconds=%g;"
            " exiting now with status %d (what was not acked is consumed again)",
            self.pipeline, self.shutdown_timeout, code,
        )  # fmt: skip
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._hard_exit(code)

    def cancel_watchdog(self) -> None:
        """For tests: the process is not really exiting."""
        self._exited.set()
