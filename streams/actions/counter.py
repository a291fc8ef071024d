"""``streamscore_actions_total{pipeline, action}``: the actions topic, counted by a process
Prometheus scrapes.

Actions are recorded by short-lived commands (``models promote``/``rollback``) and, later,
by the controller; a counter in a command's process would never be scraped. So each
learning worker (role ``learning`` or ``all``) follows its pipeline's actions topic from its
end at start (no consumer group, nothing committed) and counts each record by its
``action``; an unknown one counts as ``other`` (bounded labels). Every learning worker
counts every action (standbys too): sum nothing, take ``max by (pipeline, action)``.
A failure here is logged and retried; it never stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from mode import Service

from streams.actions.record import ACTIONS
from streams.metrics import Metrics
from streams.runtime.connections import KafkaConnection
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0


def counted_action(value: bytes | None) -> str:
    """The counter's ``action`` label for one record of the actions topic."""
    try:
        action = orjson.loads(value or b"").get("action")
    except (orjson.JSONDecodeError, AttributeError):
        return "other"
    return action if action in ACTIONS else "other"


class ActionsCounter(Service):
    def __init__(self, spec: PipelineSpec, kafka: KafkaConnection, metrics: Metrics) -> None:
        super().__init__()
        self.topic = spec.actions_topic
        self._kafka = kafka
        self._counter = metrics.actions
        self._pipeline = spec.name
        for action in (*ACTIONS, "other"):  # every series from the start (increase() needs it)
            self._counter.labels(spec.name, action)
        self._task: asyncio.Task[None] | None = None
        self.following = asyncio.Event()  # set once positioned at the topic's end

    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker hiccup must not stop the worker
                log.warning("pipeline %s: counting %s: %r", self._pipeline, self.topic, exc)
            await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self) -> None:
        consumer: AIOKafkaConsumer = self._kafka.consumer(group_id=None, enable_auto_commit=False)
        await self._kafka.start(consumer)
        try:
            partition = TopicPartition(self.topic, 0)  # the actions topic has one
            consumer.assign([partition])
            await consumer.seek_to_end(partition)
            await consumer.position(partition)  # resolved now: what comes next is counted
            self.following.set()
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for batch in batches.values():
                    for record in batch:
                        self._counter.labels(self._pipeline, counted_action(record.value)).inc()
        finally:
            await consumer.stop()
