"""Privacy on a real worker: with the event id and the card hashed, an email dropped and
dead-letter originals dropped, no raw value appears in any byte of any record on any output
topic (predictions, shadow predictions, dead letters, joined labels) nor in the pipeline's
Redis keys and values, while every valid event is still scored with its real card's
features and every label still joins."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from datetime import UTC, datetime

import orjson
import pytest
import redis

from streams.cli.generators import make_generator
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    read_to_end,
    wait_until,
)

pytestmark = pytest.mark.integration

KEY = "integration-privacy-key-0123456789"
N = 40
TIMEOUT = 90.0


def hashed(text: str) -> str:
    return hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()


def test_withheld_values_never_leave_a_real_worker(card_fraud: PreparedPipeline) -> None:
    suffix = uuid.uuid4().hex[:8]
    base = card_fraud.spec
    event = base.event.model_dump(mode="json", exclude_none=True)
    event["fields"]["email"] = {"type": "string", "required": False}
    spec_path, spec = card_fraud.variant(
        suffix,
        event=event,
        labels={**base.labels.model_dump(), "topic": f"labels-{suffix}"},
        privacy={
            "hash": [base.event.id_field, base.entity.field],
            "drop": ["email"],
            "dead_letter_originals": "drop",
        },
    )
    settings = card_fraud.settings
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(create_topics(settings, spec))

    generator = make_generator(spec, seed=31)
    now = datetime.now(UTC)
    labelled = [generator.next_labelled(now) for _ in range(N)]
    valid = []
    for i, (e, _) in enumerate(labelled):
        e["transaction_id"] = f"txn-secret-{suffix}-{i:03d}"
        e["email"] = f"mail-secret-{i}@example.com"
        valid.append(e)
    template = valid[0]
    invalid = [
        {**template, "transaction_id": "txn-secret-bad-email", "email": ["mail-secret-x"]},
        {**template, "transaction_id": "txn-secret-bad-category", "merchant_category": "zoo"},
        {**template, "transaction_id": "txn-secret-long-card", "card_id": "card-" + "9" * 600},
    ]
    secrets = {e["transaction_id"] for e in valid + invalid}
    secrets |= {e["card_id"] for e in valid + invalid} | {"mail-secret"}
    events = [(e["transaction_id"].encode(), orjson.dumps(e)) for e in valid + invalid]
    asyncio.run(produce(bootstrap, spec.input.topic, events))

    shadow_count = len(base.shadows) + (1 if base.online else 0)
    worker = WorkerProcess(
        spec_path,
        settings.model_copy(update={"privacy_hash_key": KEY, "metrics_port": free_port()}),
        card_fraud.workdir / f"{spec.name}.log",
    )
    topics = [spec.output.topic, spec.output.dead_letter_topic]
    try:
        out = asyncio.run(consume(bootstrap, topics, len(events), TIMEOUT, worker))
        assert sum(map(len, out.values())) == len(events), worker.log_tail()
        # Labels name the events by their real ids, after the predictions are stored.
        labels = [
            (
                e["transaction_id"].encode(),
                orjson.dumps({"event_id": e["transaction_id"], "label": y}),
            )
            for e, (_, y) in zip(valid, labelled, strict=True)
        ]
        asyncio.run(produce(bootstrap, spec.labels.topic, labels))
        learned = {"pipeline": spec.name}
        wait_until(
            lambda: worker.metric("streamscore_online_learned_total", **learned) == N,
            TIMEOUT, [worker], "every label learned",
        )  # fmt: skip
        shadows = asyncio.run(
            consume(bootstrap, [spec.shadow_topic], N * shadow_count, TIMEOUT, worker)
        )
        assert len(shadows.get(spec.shadow_topic, [])) == N * shadow_count, worker.log_tail()
        assert worker.running, worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    output_topics = {
        spec.output.topic: spec.output_partitions,
        spec.output.dead_letter_topic: spec.output_partitions,
        spec.shadow_topic: spec.output_partitions,
    }
    records = asyncio.run(read_to_end(bootstrap, output_topics))
    for topic, topic_records in records.items():
        for record in topic_records:
            raw = b"".join(
                [record.key or b"", record.value or b""]
                + [name.encode() + value for name, value in record.headers or ()]
            )
            found = [s for s in secrets if s.encode() in raw]
            assert not found, f"{topic} record at offset {record.offset} carries {found}"

    # Predictions still come out, scored with the real card's features, under hashed ids.
    predictions = [orjson.loads(r.value) for r in records[spec.output.topic]]
    assert sorted(p["event_id"] for p in predictions) == sorted(
        hashed(e["transaction_id"]) for e in valid
    )
    by_id = {p["event_id"]: p for p in predictions}
    for e in valid:
        prediction = by_id[hashed(e["transaction_id"])]
        assert prediction["entity_key"] == hashed(e["card_id"])
        assert prediction["entity_found"] is True  # the features were read with the real key
    # Dead letters: one each, no original, and an error that names the field only.
    letters = {orjson.loads(r.value)["reason"]: orjson.loads(r.value) for r in records[
        spec.output.dead_letter_topic]}  # fmt: skip
    assert set(letters) == {"wrong_type", "unknown_category", "too_large"}
    assert all(d["original_dropped"] and d["original_value_b64"] is None for d in letters.values())
    assert "'email'" in letters["wrong_type"]["error"]
    assert "'card_id'" in letters["too_large"]["error"]

    # The pipeline's Redis keys and values: the prediction store, the online learner's state.
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=f"streamscore:{spec.name}:*", count=1000))
    stored = [k for k in keys if b":prediction:" in k]
    assert sorted(k.rsplit(b":", 1)[1].decode() for k in stored) == sorted(by_id)
    # Every label joined and was learned, under the hashed id.
    learned_ids = [k.rsplit(b":", 1)[1].decode() for k in keys if b":learned:" in k]
    assert sorted(learned_ids) == sorted(by_id)
    for key in keys:
        kind = client.type(key)
        values = [client.get(key)] if kind == b"string" else []
        values += list(client.hgetall(key).items()) if kind == b"hash" else []
        values += list(client.smembers(key)) if kind == b"set" else []
        raw = key + b"".join(v if isinstance(v, bytes) else b"".join(v) for v in values)
        found = [s for s in secrets if s.encode() in raw]
        assert not found, f"Redis key {key!r} carries {found}"
