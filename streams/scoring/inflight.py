"""Several micro-batches in flight, acked in order.

A batch spends most of its time waiting: on the feature read, then on Kafka acknowledging
its outputs. Faust's ``take`` stops filling the next batch while the agent awaits, so with
one batch at a time the consumer idles through every round trip. ``InFlight`` runs each
batch as a task, lets the agent take the next batch at once, and acks a batch's input events
only when its task has succeeded and every batch before it has been acked: the committed
offset never passes an input whose outputs are not delivered (at-least-once, as before).

A failed batch stops everything after it: nothing later is acked, and the failure is raised
in the agent at its next ``reserve`` and by ``drain``; the inputs are consumed again after a
restart. (The worker does not wait for that: the batch's work reports its own failure and
stops the worker, ``streams.runtime.lifecycle.Lifecycle.run_batch``.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

E = TypeVar("E")


class InFlight(Generic[E]):
    """Up to ``limit`` batches processed concurrently; ``ack`` called for each batch, in
    submission order, after its work succeeded."""

    def __init__(self, limit: int, ack: Callable[[Sequence[E]], Awaitable[None]]) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._ack = ack
        self._queue: asyncio.Queue[tuple[Sequence[E], asyncio.Future[Any]]] = asyncio.Queue()
        self._failure: BaseException | None = None
        self._unfinished = 0  # batches started and not yet acked (or failed)
        self._acker = asyncio.ensure_future(self._ack_in_order())

    async def reserve(self) -> None:
        """Wait for room for one more batch (while ``limit`` batches are unacked); raises
        the failure of an earlier batch. Call before taking the batch, so that it holds
        everything that arrived while the worker was busy."""
        await self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            raise self._failure

    def start(self, events: Sequence[E], work: Awaitable[Any]) -> None:
        """Run ``work`` for ``events`` in the slot ``reserve`` made."""
        self._queue.put_nowait((events, asyncio.ensure_future(work)))
        self._unfinished += 1

    async def drain(self, timeout: float) -> int:
        """Let the batches in flight finish and be acked (graceful stop), then stop; returns
        how many were abandoned unacked when ``timeout`` ran out (the batch being acked
        then counts too). Raises the failure of an earlier batch."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        abandoned = self._unfinished
        self._acker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._acker
        unfinished = []
        while not self._queue.empty():  # timed out: the rest are consumed again on restart
            _, task = self._queue.get_nowait()
            task.cancel()
            unfinished.append(task)
        await asyncio.gather(*unfinished, return_exceptions=True)
        if self._failure is not None:
            raise self._failure
        return abandoned

    async def _ack_in_order(self) -> None:
        while True:
            events, task = await self._queue.get()
            try:
                if self._failure is None:
                    await task
                    await self._ack(events)
                else:
                    task.cancel()  # after a failure nothing is acked: stop the work too
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # drain() is stopping the acker
                self._failure = RuntimeError("a batch's work was cancelled before delivery")
            except Exception as exc:  # handed to the agent by reserve() / drain()
                self._failure = exc
            finally:
                self._unfinished -= 1
                self._slots.release()
                self._queue.task_done()
