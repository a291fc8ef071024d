"""``streamscore dlq replay`` on real workers: events with a category the spec does not know
yet are dead-lettered; the spec is fixed to accept it, and the replay resends exactly those
(not the still-invalid, not the truncated), so they come out as predictions; a label
dead-lettered for its long id goes back to the labels topic once the limit is raised; a
second replay resends nothing."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from typer.testing import CliRunner

from streams.cli.generators import make_generator
from streams.cli.main import app as cli
from streams.cli.replay_run import REPLAY_HEADER
from streams.runtime.processes import WorkerProcess, settings_env
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    read_to_end,
)

pytestmark = pytest.mark.integration

TIMEOUT = 90.0
N, NEW = 20, 5  # valid events; events with the new category


def replay(spec_path, settings) -> tuple[dict[str, int], str]:
    """Run the CLI; the counts of its last progress line, and its whole output."""
    result = CliRunner().invoke(
        cli, ["dlq", "replay", "--spec", str(spec_path)], env=settings_env(settings)
    )
    assert result.exit_code == 0, result.output
    last = [line for line in result.output.splitlines() if line.startswith("dlq replay ")][-1]
    counts = {name.replace(" ", "_"): int(n) for n, name in re.findall(r"(\d+) ([a-z ]+)", last)}
    return counts, result.output


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def predicted_ids(
    bootstrap: str, topic: str, wanted: set[str], worker: WorkerProcess
) -> set[str]:
    """Event ids of the predictions on ``topic``, read until ``wanted`` are all there."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: set[str] = set()
    deadline = time.monotonic() + TIMEOUT
    try:
        while not wanted <= got and time.monotonic() < deadline and worker.running:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got |= {orjson.loads(r.value)["event_id"] for r in records}
    finally:
        await consumer.stop()
    return got


def test_replay_resends_what_the_fixed_spec_accepts_once(card_fraud: PreparedPipeline) -> None:
    suffix = uuid.uuid4().hex[:8]
    base = card_fraud.spec
    labels = {**base.labels.model_dump(), "topic": f"labels-{suffix}"}

    def spec_with_regions(regions: list[str]):
        event = base.event.model_dump(mode="json", exclude_none=True)
        event["fields"]["region"] = {"type": "category", "values": regions}
        return card_fraud.variant(suffix, event=event, labels=labels)

    spec_path, spec = spec_with_regions(["eu", "us"])
    settings = card_fraud.settings.model_copy(update={"max_event_bytes": 8 * 1024})
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(create_topics(settings, spec))

    generator = make_generator(spec, seed=41)
    now = datetime.now(UTC)
    events = [{**generator.next_event(now), "region": "eu"} for _ in range(N + NEW + 2)]
    for e in events[N : N + NEW]:
        e["region"] = "apac"  # unknown to the spec, for now
    events[-2]["amount"] = -5.0  # out of range: still invalid after the fix
    events[-1]["note"] = "x" * 10_000  # too large: its dead letter keeps 1 KiB, truncated
    asyncio.run(
        produce(bootstrap, spec.input.topic, [(e["transaction_id"].encode(), orjson.dumps(e))
                                              for e in events])
    )  # fmt: skip
    long_id = "t-" + "9" * 600  # above max_key_bytes (512): the label is dead-lettered
    label = orjson.dumps({"event_id": long_id, "label": 1})
    asyncio.run(produce(bootstrap, spec.labels.topic, [(b"label-key", label)]))

    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}-1.log")
    topics = [spec.output.topic, spec.output.dead_letter_topic]
    try:
        out = asyncio.run(consume(bootstrap, topics, len(events) + 1, TIMEOUT, worker))
        assert sum(map(len, out.values())) == len(events) + 1, worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    reasons = sorted(orjson.loads(r.value)["reason"] for r in out[spec.output.dead_letter_topic])
    assert reasons == ["out_of_range", "too_large", "too_large"] + ["unknown_category"] * NEW

    # The fix: the spec accepts the new region, and ids may be longer.
    spec_path, spec = spec_with_regions(["eu", "us", "apac"])
    fixed = settings.model_copy(update={"max_key_bytes": 1024})
    worker = WorkerProcess(spec_path, fixed, card_fraud.workdir / f"{spec.name}-2.log")
    try:
        counts, output = replay(spec_path, fixed)
        assert counts == {
            "dead_letters_read": NEW + 3, "replayed": NEW + 1, "still_invalid": 1,
            "already_replayed": 0, "truncated": 1,
        }, output  # fmt: skip
        assert "still invalid: out_of_range" in output

        wanted = {e["transaction_id"] for e in events[N : N + NEW]}
        got = asyncio.run(predicted_ids(bootstrap, spec.output.topic, wanted, worker))
        assert wanted <= got, worker.log_tail()
        assert worker.running, worker.log_tail()

        before = asyncio.run(end_offsets(bootstrap, spec.input.topic, spec.input.partitions))
        counts, output = replay(spec_path, fixed)
        assert counts["replayed"] == 0 and counts["already_replayed"] == NEW + 1, output
        after = asyncio.run(end_offsets(bootstrap, spec.input.topic, spec.input.partitions))
        assert after == before  # nothing was sent
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # What went back: the originals as they came, each to its own topic, marked.
    resent = asyncio.run(
        read_to_end(bootstrap, {spec.input.topic: spec.input.partitions,
                                spec.labels.topic: spec.labels.partitions})
    )  # fmt: skip
    replayed = {
        topic: [r for r in records if dict(r.headers or ()).get(REPLAY_HEADER)]
        for topic, records in resent.items()
    }
    originals = {e["transaction_id"].encode(): orjson.dumps(e) for e in events[N : N + NEW]}
    assert {r.key: r.value for r in replayed[spec.input.topic]} == originals
    assert [(r.key, r.value) for r in replayed[spec.labels.topic]] == [(b"label-key", label)]
