"""The controller's reading of the monitoring topic, for ``actions.retrain.on_drift``.

No consumer group and nothing committed: at start the controller reads the last
``TAIL`` records of each partition (so a restart sees a streak already under way), then each
tick what was written since, up to the end offsets it asked for. Every read is bounded: a
broker that does not answer costs one tick ``budget`` seconds, and the next tick tries again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams.runtime.connections import KafkaConnection
from streams.runtime.topics import topic_partitions
from streams.scoring.records import json_object

#: Records per partition read back at start.
TAIL = 500


class MonitoringFollower:
    def __init__(self, kafka: KafkaConnection, topic: str) -> None:
        self._kafka = kafka
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    async def read_new(self, budget: float) -> list[dict[str, Any]]:
        """The JSON records written since the last call (or the tail, the first time),
        in order per partition; [] while the topic does not exist."""
        deadline = time.monotonic() + budget
        async with asyncio.timeout(budget):
            if self._consumer is None and not await self._start():
                return []
            consumer = self._consumer
            assert consumer is not None
            ends = await consumer.end_offsets(self._partitions)
            out: list[dict[str, Any]] = []
            pending = [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]
            while pending and time.monotonic() < deadline:
                fetched = await consumer.getmany(*pending, timeout_ms=200)
                for batch in fetched.values():
                    out += [d for r in batch if (d := json_object(r.value)) is not None]
                pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
            return out

    async def _start(self) -> bool:
        count = await topic_partitions(self._kafka, self.topic)
        if not count:
            return False
        consumer = self._kafka.consumer(group_id=None, enable_auto_commit=False)
        await self._kafka.start(consumer)
        self._consumer = consumer
        self._partitions = [TopicPartition(self.topic, p) for p in range(count)]
        consumer.assign(self._partitions)
        starts = await consumer.beginning_offsets(self._partitions)
        ends = await consumer.end_offsets(self._partitions)
        for tp in self._partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - TAIL))
        return True

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
