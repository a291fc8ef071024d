"""What only a real broker shows: consumer-group rebalances while events flow, more
partitions than workers, a restart resuming from committed offsets, and a client other than
aiokafka (librdkafka, through confluent-kafka) on both ends of the pipeline.

These run on Apache Kafka; on Tansu they are skipped (its group joins take half the session
timeout and it answers ListOffsets short, so "read to the end" cannot be trusted there).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.cli.generators import make_generator
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from streams.spec import PipelineSpec
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    read_to_end,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _apache_kafka_only(broker_kind: str) -> None:
    if broker_kind != "kafka":
        pytest.skip("needs Apache Kafka (STREAMSCORE_EMBEDDED_BROKER=kafka, Java 17+)")


def new_worker(prepared: PreparedPipeline, spec_path, name: str) -> WorkerProcess:
    settings = prepared.settings.model_copy(update={"metrics_port": free_port()})
    return WorkerProcess(spec_path, settings, prepared.workdir / f"{name}.log")


def owned(workers: list[WorkerProcess]) -> list[int]:
    return [int(w.assigned_partitions() or 0) for w in workers]


def events(spec: PipelineSpec, n: int, seed: int, bad_every: int = 0) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) messages keyed by event id; every ``bad_every``-th is not JSON."""
    generator = make_generator(spec, seed=seed)
    id_field = spec.event.id_field
    out = []
    for i in range(n):
        event = generator.next_event(datetime.now(UTC))
        key = str(event[id_field]).encode()
        bad = bad_every and i % bad_every == 0
        out.append((key, b"{not json" if bad else orjson.dumps(event)))
    return out


def outcomes(spec: PipelineSpec, bootstrap: str) -> tuple[Counter[bytes], Counter[bytes]]:
    """How many predictions and dead letters each input key got, read to the topics' end."""
    n = spec.output_partitions
    records = asyncio.run(
        read_to_end(bootstrap, {spec.output.topic: n, spec.output.dead_letter_topic: n})
    )
    predicted = Counter(r.key for r in records[spec.output.topic])
    dead = Counter(r.key for r in records[spec.output.dead_letter_topic])
    return predicted, dead


class PacedProducer(threading.Thread):
    """Sends ``messages`` at ``rate``/s from a thread of its own; ``sent`` counts progress."""

    def __init__(self, bootstrap: str, topic: str, messages: list, rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.messages, self.rate = bootstrap, topic, messages, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def _send(self) -> None:
        chunk = max(1, int(self.rate / 20))  # 20 sends a second
        start = time.monotonic()
        for i in range(0, len(self.messages), chunk):
            await produce(self.bootstrap, self.topic, self.messages[i : i + chunk])
            self.sent = min(i + chunk, len(self.messages))
            ahead = start + self.sent / self.rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing the offered rate, not waiting on a result


def test_a_worker_joins_and_leaves_while_events_flow_and_every_input_ends_once(
    card_fraud: PreparedPipeline,
) -> None:
    spec_path, spec = card_fraud.variant(uuid.uuid4().hex[:8], input_partitions=6)
    bootstrap = card_fraud.settings.kafka_bootstrap_servers
    asyncio.run(create_topics(card_fraud.settings, spec))
    messages = events(spec, 4500, seed=11, bad_every=100)
    first = new_worker(card_fraud, spec_path, f"{spec.name}-first")
    second: WorkerProcess | None = None
    producer = PacedProducer(bootstrap, spec.input.topic, messages, rate=300)
    try:
        # More partitions than workers: one worker owns all six.
        wait_until(lambda: owned([first]) == [6], 90, [first], "the first worker owning 6")
        producer.start()
        wait_until(lambda: producer.sent >= 1500, 60, [first], "a third of the events sent")
        second = new_worker(card_fraud, spec_path, f"{spec.name}-second")
        # The group rebalances while events flow: three partitions each.
        wait_until(lambda: owned([first, second]) == [3, 3], 90, [first, second], "3 + 3")
        wait_until(lambda: producer.sent >= 3000, 60, [first, second], "two thirds sent")
        assert second.stop() == 0, second.log_tail()  # leaves the group while events flow
        wait_until(lambda: owned([first]) == [6], 90, [first], "the first owning 6 again")
        producer.join(60)
        assert producer.error is None and producer.sent == len(messages), producer.error
        keys = {key for key, _ in messages}
        topics = [spec.output.topic, spec.output.dead_letter_topic]
        out = asyncio.run(consume(bootstrap, topics, len(keys), 120, first, keys=keys))
        answered = {r.key for records in out.values() for r in records}
        assert answered == keys, first.log_tail()
    finally:
        producer.join(5)
        codes = [first.stop(), second.stop() if second else 0]
    assert codes == [0, 0]
    predicted, dead = outcomes(spec, bootstrap)
    bad = {key for i, (key, _) in enumerate(messages) if i % 100 == 0}
    lost = [key for key, _ in messages if predicted[key] + dead[key] == 0]
    assert not lost, f"{len(lost)} inputs have neither a prediction nor a dead letter"
    assert not set(predicted) & set(dead), "an input was both predicted and dead-lettered"
    assert set(dead) == bad
    duplicates = sum(predicted.values()) + sum(dead.values()) - len(messages)
    # At-least-once: a rebalance may replay what was processed but not yet committed (at most
    # about one commit interval of events per revoked partition), never lose anything.
    print(f"rebalance: {len(messages)} inputs, {duplicates} duplicates")
    assert duplicates < len(messages) // 4, duplicates


def test_a_restarted_worker_resumes_from_its_committed_offsets(
    card_fraud: PreparedPipeline,
) -> None:
    spec_path, spec = card_fraud.variant(uuid.uuid4().hex[:8])
    bootstrap = card_fraud.settings.kafka_bootstrap_servers
    topics = [spec.output.topic, spec.output.dead_letter_topic]
    asyncio.run(create_topics(card_fraud.settings, spec))
    before, during = events(spec, 400, seed=21), events(spec, 400, seed=22)
    worker = new_worker(card_fraud, spec_path, f"{spec.name}-a")
    try:
        wait_until(lambda: owned([worker]) == [spec.input.partitions], 90, [worker], "assigned")
        asyncio.run(produce(bootstrap, spec.input.topic, before))
        asyncio.run(consume(bootstrap, topics, 0, 90, worker, keys={k for k, _ in before}))
    finally:
        assert worker.stop() == 0, worker.log_tail()  # commits what it acked, leaves the group
    asyncio.run(produce(bootstrap, spec.input.topic, during))  # nobody is consuming
    worker = new_worker(card_fraud, spec_path, f"{spec.name}-b")
    try:
        wait_until(lambda: owned([worker]) == [spec.input.partitions], 90, [worker], "assigned")
        keys = {key for key, _ in before + during}
        out = asyncio.run(consume(bootstrap, topics, 0, 90, worker, keys=keys))
        assert {r.key for records in out.values() for r in records} == keys, worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    predicted, dead = outcomes(spec, bootstrap)
    answered = predicted + dead
    assert all(answered[key] == 1 for key, _ in before), "the restart replayed committed input"
    assert all(answered[key] == 1 for key, _ in during), "input sent while down was not scored"


def test_a_librdkafka_client_produces_events_and_reads_predictions(
    card_fraud: PreparedPipeline, unique: str
) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    spec_path, spec = card_fraud.variant(unique)
    bootstrap = card_fraud.settings.kafka_bootstrap_servers
    asyncio.run(create_topics(card_fraud.settings, spec))
    messages = events(spec, 300, seed=31)
    worker = new_worker(card_fraud, spec_path, f"{spec.name}-rdkafka")
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"downstream-{unique}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    try:
        wait_until(lambda: owned([worker]) == [spec.input.partitions], 90, [worker], "assigned")
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for key, value in messages:
            producer.produce(spec.input.topic, value=value, key=key)
        assert producer.flush(30) == 0, "librdkafka could not deliver every event"
        consumer.subscribe([spec.output.topic])
        received: dict[bytes, dict[str, Any]] = {}
        deadline = time.monotonic() + 90
        while len(received) < len(messages) and time.monotonic() < deadline:
            assert worker.running, worker.log_tail()
            for record in consumer.consume(num_messages=500, timeout=0.5):
                assert record.error() is None, record.error()
                received[record.key()] = orjson.loads(record.value())
    finally:
        consumer.close()
        assert worker.stop() == 0, worker.log_tail()
    assert set(received) == {key for key, _ in messages}
    id_field = spec.event.id_field
    sent = {key: orjson.loads(value) for key, value in messages}
    for key, prediction in received.items():
        assert prediction["event_id"] == str(sent[key][id_field])
        assert prediction["model"] == spec.model.name
        assert 0.0 <= prediction["score"] <= 1.0
