"""Poison events on a real worker: each is its own dead letter, and its partition keeps flowing.

An event time Python's ``datetime`` cannot format once passed validation and then failed while
its batch's records were built: the agent crashed, Faust restarted it, and nothing more on
that partition was ever scored. Here such events (and an oversize one, an oversize key and an
empty id) are mixed into one partition between valid events; then more valid events follow
on the same partition, after the poison has been consumed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.cli.generators import make_generator
from streams.runtime.processes import WorkerProcess
from streams.scoring.records import decode_original_value
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
)

pytestmark = pytest.mark.integration

TIMEOUT = 60.0
PARTITION = 1  # every message goes to this one partition


def with_time(event: dict[str, Any], time_field: str, raw_time: bytes) -> bytes:
    """The event as JSON with its time as raw JSON text (2**70 has no orjson encoding)."""
    return orjson.dumps({**event, time_field: "@T@"}).replace(b'"@T@"', raw_time)


async def create_input_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(2 * 1024 * 1024)}
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
    finally:
        await admin.close()


def test_poison_events_are_dead_lettered_and_their_partition_keeps_flowing(
    card_fraud: PreparedPipeline,
) -> None:
    spec_path, spec = card_fraud.variant(uuid.uuid4().hex[:8])
    settings = card_fraud.settings
    bootstrap = settings.kafka_bootstrap_servers
    id_field, time_field = spec.event.id_field, spec.event.time_field
    assert time_field is not None
    generator = make_generator(spec, seed=12)
    now = datetime.now(UTC)
    valid = [generator.next_event(now) for _ in range(60)]
    template = valid[0]

    def keyed(event: dict[str, Any]) -> tuple[bytes, bytes]:
        return str(event[id_field]).encode(), orjson.dumps(event)

    huge = orjson.dumps({**template, id_field: "huge", "note": "x" * 1_200_000})
    poison: dict[bytes, tuple[bytes, str]] = {  # key -> (value, expected reason)
        b"poison-ms-minus-1e15": (with_time(template, time_field, b"-1000000000000000"), ""),
        b"poison-ms-1e20": (with_time(template, time_field, b"1e20"), ""),
        b"poison-year-10000-utc": (
            with_time(template, time_field, b'"9999-12-31T23:59:59-12:00"'),
            "",
        ),
        b"poison-ms-2**70": (with_time(template, time_field, str(2**70).encode()), ""),
        b"poison-1.2MB": (huge, "too_large"),
        # Under the default limit (256 KiB), over this worker's STREAMSCORE_MAX_EVENT_BYTES.
        b"over-the-setting": (orjson.dumps({**template, "note": "x" * 20_000}), "too_large"),
        b"K" * 1000: (orjson.dumps({**template, id_field: "long-key"}), "too_large"),
        b"poison-empty-id": (orjson.dumps({**template, id_field: ""}), "missing_field"),
    }
    poison = {k: (v, reason or "out_of_range") for k, (v, reason) in poison.items()}
    first, then = valid[:40], valid[40:]
    messages = [keyed(e) for e in first]
    for i, (key, (value, _)) in enumerate(poison.items()):  # poison between valid events
        messages.insert(1 + i * (len(messages) // len(poison)), (key, value))

    # The input topic takes messages up to 2 MiB (Kafka's default: 1 MiB), as a deployment
    # accepting large events would configure it; the dead letters still go to a default topic.
    asyncio.run(create_input_topic(bootstrap, spec.input.topic, spec.input.partitions))
    asyncio.run(create_topics(settings, spec))
    asyncio.run(
        produce(
            bootstrap, spec.input.topic, messages, partition=PARTITION,
            max_request_size=2 * 1024 * 1024,
        )
    )  # fmt: skip
    topics = [spec.output.topic, spec.output.dead_letter_topic]
    worker = WorkerProcess(
        spec_path,
        settings.model_copy(update={"max_event_bytes": 8 * 1024}),
        card_fraud.workdir / f"{spec.name}.log",
    )
    try:
        out = asyncio.run(consume(bootstrap, topics, len(messages), TIMEOUT, worker))
        got = sum(map(len, out.values()))
        assert got == len(messages), f"{got} of {len(messages)} out\n{worker.log_tail(40)}"
        # The poison is behind; the same partition must still be scored.
        asyncio.run(produce(bootstrap, spec.input.topic, [keyed(e) for e in then],
                            partition=PARTITION))  # fmt: skip
        total = len(messages) + len(then)
        out = asyncio.run(consume(bootstrap, topics, total, TIMEOUT, worker))
        log = worker.log_tail(40)
        assert worker.running, log
    finally:
        exit_code = worker.stop()

    predictions = [orjson.loads(r.value) for r in out.get(spec.output.topic, [])]
    dead_records = out.get(spec.output.dead_letter_topic, [])
    dead = {r.key: orjson.loads(r.value) for r in dead_records}

    # Every input is exactly one prediction or one dead letter.
    expected = sorted(str(e[id_field]) for e in valid)
    assert sorted(p["event_id"] for p in predictions) == expected, log
    assert len(dead_records) == len(dead) == len(poison), log
    assert set(dead) == set(poison)
    for key, (value, reason) in poison.items():
        letter = dead[key]
        assert (letter["stage"], letter["reason"]) == ("decode", reason), letter["error"]
        assert letter["source"]["partition"] == PARTITION
        if reason != "too_large":
            assert decode_original_value(letter) == value

    oversize = next(r for r in dead_records if r.key == b"poison-1.2MB")
    letter = orjson.loads(oversize.value)
    assert letter["original_value_size"] == len(huge) > 1_000_000
    assert letter["original_value_truncated"] is True
    assert decode_original_value(letter) == huge[:1024]
    assert len(oversize.value) < 4096
    assert exit_code == 0, log
