"""The publish stage: send a batch's records and wait until Kafka has them all.

A micro-batch's records are grouped by topic and partition and handed to the producer as
ready-made record batches (aiokafka's ``create_batch`` / ``send_batch``): one delivery future
per partition instead of one per record, and none of the per-record accumulator, logging and
Faust sensor calls of ``send`` (together ~9% of a loaded worker's CPU, measured). Partitions
come from aiokafka's default partitioner (murmur2 of the key, as the Java client), so a key
lands where any other Kafka producer would put it. Only after every batch is delivered does
the agent ack the input messages, so a crash can duplicate output but never lose it.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2

from streams.runtime.connections import KafkaConnection
from streams.scoring.records import OutputRecord

#: Returns the started producer (Faust starts its own with the app, after wiring).
ProducerSource = Callable[[], AIOKafkaProducer]


class Publisher(Protocol):
    async def publish(self, records: Sequence[OutputRecord]) -> None: ...


def app_producer(app: Any) -> ProducerSource:
    """The aiokafka producer of a Faust app (Faust has no public accessor for it)."""
    return lambda: app.producer._ensure_producer()  # noqa: SLF001


class OwnProducer:
    """A second aiokafka producer, on a broker connection of its own.

    aiokafka keeps one produce request in flight per broker connection: through the app's
    producer, a shadow's records would queue the primary's next publish behind their round
    trip. Shadows publish through this one (``streams.runtime.app.attach_shadows`` starts and stops
    it with them), and the primary's acks never wait for them.
    """

    def __init__(self, kafka: KafkaConnection, max_batch_bytes: int, client_id: str) -> None:
        self._kafka = kafka
        self._max_batch_bytes = max_batch_bytes
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = self._kafka.producer(
            client_id=self._client_id,
            acks="all",  # as the app's producer (Faust's default)
            linger_ms=1,  # as the app's producer (streams.runtime.app.create_app)
            max_batch_size=self._max_batch_bytes,
        )
        await self._kafka.start(self._producer)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # sends what is queued first

    def __call__(self) -> AIOKafkaProducer:
        if self._producer is None:
            msg = "OwnProducer used before start()"
            raise RuntimeError(msg)
        return self._producer


@functools.lru_cache(maxsize=1 << 16)
def _murmur2(key: bytes) -> int:
    """aiokafka's murmur2 (pure Python, ~4% of a scoring worker's CPU), once per key: an
    event's prediction and its shadows' records share the key. The partition is then
    computed as ``DefaultPartitioner`` does."""
    return int(murmur2(key))


class KafkaPublisher:
    def __init__(self, producer: ProducerSource) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()

    async def publish(self, records: Sequence[OutputRecord]) -> None:
        if not records:
            return
        producer = self._producer()
        partitions = {
            topic: sorted(await producer.partitions_for(topic))  # cached metadata once known
            for topic in {record.topic for record in records}
        }
        by_partition: dict[tuple[str, int], list[OutputRecord]] = defaultdict(list)
        for record in records:
            choices = partitions[record.topic]
            if record.key is None:
                partition = self._partitioner(None, choices, choices)
            else:
                partition = choices[(_murmur2(record.key) & 0x7FFFFFFF) % len(choices)]
            by_partition[(record.topic, partition)].append(record)
        deliveries = []
        for (topic, partition), group in by_partition.items():
            batch = producer.create_batch()
            for record in group:
                if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                    # Full (the producer's max batch size): send it, start another.
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=record.key, value=record.value, timestamp=None)
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*deliveries)
