"""Faust's aiokafka transport: the consumer's fetch wait and minimum as settings, and
delivery of each fetch to the streams in one step.

Faust 0.15 hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Apache Kafka
answers a fetch as soon as data is there, so for it the wait only paces idle polling; the
embedded Tansu broker holds every fetch for about half the wait even when data is waiting
(measured here: ~700 ms at 1,500 ms, ~4 ms at 10 ms). End-to-end latency on the embedded
broker therefore depends on it, and it becomes ``Settings.kafka_fetch_max_wait_ms``; Faust
has no setting for the fetch minimum either (``Settings.kafka_fetch_min_bytes``).

Faust 0.15 hands each fetched record to the streams inside its own ``wait_first`` (four tasks
created and three cancelled per record, so at least one event-loop turn per record). On a
loaded worker every loop turn also runs a slice of the agent's batch work, so records reached
the agent's batch at the rate of loop turns, not of the fetch: batches stayed at ~20 events
and a lag of seconds built up at 2,000 events/s with the worker's CPU not saturated (measured
here with a trace of batch sizes and fetches). ``_Consumer._drain_messages`` keeps Faust's
loop and bookkeeping but delivers a whole fetch inside one ``wait_first``: a rebalance
(``suspend_flow``) or a stop still interrupts delivery, and what was not delivered is fetched
again from the committed offsets, as before.

Faust's ``Consumer.wait_empty`` (before a rebalance and on stop, it waits for the agents to
ack every event they took) waits without limit: after a failed batch, whose events are
never acked, a stop never ended. ``_Consumer.wait_empty`` does not wait for a failed
worker, waits at most the stop's drain budget on a stop (``streams.runtime.lifecycle``), and waits
as Faust does otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, cast

import aiokafka
import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode import ServiceT

from streams.runtime.lifecycle import Lifecycle

# Let other tasks (health checks, the agents) run between this many records of one fetch.
_YIELD_EVERY = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by aiokafka when the consumer starts and builds its fetcher, which is later.
        app = cast(StreamscoreApp, self.app)
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        consumer._fetch_min_bytes = app.fetch_min_bytes
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop (``Consumer._drain_messages``), one ``wait_first`` per fetch."""
        fetcher_stopped = cast(Any, fetcher)._stopped.is_set  # noqa: SLF001 - as Faust does
        try:
            while not (self._stopped.is_set() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = [pair async for pair in self.getmany(timeout=1.0)]
                await self.sleep(0)  # getmany may not have released the loop
                if records and not self.should_stop:
                    await self.wait_first(self._deliver(records), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, records: Sequence[tuple[TP, Message]]) -> None:
        """Hand records to the streams in order, as Faust does for each one (gaps in offsets
        recorded, commits every ``broker_commit_every`` acks, the read offset advanced)."""
        read_offset = self._read_offset
        for n, (tp, message) in enumerate(records, start=1):
            offset, last = message.offset, read_offset[tp]
            if last is not None and offset < last:
                continue  # already delivered (a re-fetch after a seek)
            if last and offset - last > 1 and self.app.topics.acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await self.callback(message)
            read_offset[tp] = offset
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def wait_empty(self) -> None:
        """Wait for the agents to ack what they took, bounded by the worker's lifecycle
        (see the module docstring), then commit. Faust commits an offset only once every
        event before it is acked, so whatever is left unacked is consumed again."""
        lifecycle = cast(StreamscoreApp, self.app).lifecycle
        if not (lifecycle.stopping or lifecycle.failed):
            await super().wait_empty()  # a rebalance: as Faust does
            return
        if self.should_stop:  # the consumer's own stop, after the app's wait: commit only
            await self.commit_and_end_transactions()
            return
        deadline = time.monotonic() + (0.0 if lifecycle.failed else lifecycle.drain_budget())
        while self._unacked_messages and (remaining := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wait_for_ack(timeout=remaining)  # woken by every ack
        unacked = sum(1 for message in self._unacked_messages if not message.acked)
        if unacked and not lifecycle.failed:  # a failed batch was reported already
            lifecycle.abandoned(f"{unacked} events taken by the agents")
        await self.commit_and_end_transactions()


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class StreamscoreApp(faust.App):
    """A Faust app whose worker consumer uses ``fetch_max_wait_ms`` and ``fetch_min_bytes``
    and stops as the worker's ``lifecycle`` says."""

    def __init__(
        self,
        *args: Any,
        lifecycle: Lifecycle,
        fetch_max_wait_ms: int,
        fetch_min_bytes: int = 1,
        **kwargs: Any,
    ) -> None:
        self.lifecycle = lifecycle
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)
