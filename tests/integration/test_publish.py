"""The publish stage on a real broker: every record delivered, each keyed record on the
partition any Kafka producer would choose, batches split at the producer's size limit."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaProducer

from streams.runtime.connections import KafkaConnection
from streams.runtime.topics import ensure_topics
from streams.scoring.publish import KafkaPublisher, OwnProducer
from streams.scoring.records import OutputRecord
from tests.integration.harness import consume, produce

pytestmark = pytest.mark.integration


async def test_records_land_where_a_plain_producer_puts_their_keys(
    kafka_bootstrap: str, unique: str
) -> None:
    ours, reference = f"publish-{unique}", f"publish-ref-{unique}"
    await ensure_topics(KafkaConnection(kafka_bootstrap), {ours: 4, reference: 4})
    keyed = [(f"event-{i}".encode(), b"x" * 200 + str(i).encode()) for i in range(400)]
    unkeyed = [(None, b"no key " + str(i).encode()) for i in range(5)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)  # 16 KiB batches
    await producer.start()
    try:
        before_ms = time.time() * 1000
        publisher = KafkaPublisher(lambda: producer)
        await publisher.publish([OutputRecord(ours, k, v) for k, v in keyed + unkeyed])
    finally:
        await producer.stop()
    await produce(kafka_bootstrap, reference, list(keyed))  # aiokafka's own send()

    received = await consume(kafka_bootstrap, [ours, reference], 2 * len(keyed) + 5, 60)
    assert sorted(r.value for r in received[ours]) == sorted(v for _, v in keyed + unkeyed)
    where = {r.key: r.partition for r in received[reference]}
    assert {r.key: r.partition for r in received[ours] if r.key is not None} == where
    assert len(set(where.values())) == 4
    assert all(r.timestamp >= before_ms - 1000 for r in received[ours])
    # 400 x ~210 bytes over 4 partitions exceed one 16 KiB batch per partition: split, and
    # still in the order given within each partition.
    for partition in range(4):
        got = [r.key for r in received[ours] if r.partition == partition and r.key]
        assert got == [k for k, _ in keyed if where[k] == partition]


async def test_nothing_to_publish_is_a_no_op() -> None:
    def no_producer() -> AIOKafkaProducer:
        raise AssertionError("an empty batch must not touch the producer")

    await KafkaPublisher(no_producer).publish([])


async def test_own_producer_delivers_between_start_and_stop_and_refuses_before(
    kafka_bootstrap: str, unique: str
) -> None:
    topic = f"own-{unique}"
    kafka = KafkaConnection(kafka_bootstrap)
    await ensure_topics(kafka, {topic: 2})
    own = OwnProducer(kafka, max_batch_bytes=1 << 20, client_id=f"own-{unique}")
    with pytest.raises(RuntimeError, match="before start"):
        own()
    await own.start()
    try:
        # Its batches take the size given, not aiokafka's 16 KiB: 200 KB fit in one.
        batch = own().create_batch()
        assert all(batch.append(key=None, value=b"x" * 1000, timestamp=None) for _ in range(200))
        records = [OutputRecord(topic, f"k{i}".encode(), f"v{i}".encode()) for i in range(50)]
        await KafkaPublisher(own).publish(records)
    finally:
        await own.stop()
    received = await consume(kafka_bootstrap, [topic], 50, 60)
    assert sorted(r.value for r in received[topic]) == sorted(r.value for r in records)
