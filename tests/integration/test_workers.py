"""Several workers for one pipeline: Kafka spreads the input partitions across them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from streams.cli.generators import make_generator
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_two_workers_share_the_partitions_and_score_everything_once(
    card_fraud: PreparedPipeline,
) -> None:
    spec_path, spec = card_fraud.variant(uuid.uuid4().hex[:8])
    settings = card_fraud.settings
    asyncio.run(create_topics(settings, spec))
    workers = [
        WorkerProcess(
            spec_path,
            settings.model_copy(update={"metrics_port": free_port()}),
            card_fraud.workdir / f"{spec.name}-{i}.log",
        )
        for i in range(2)
    ]
    try:
        # Both own partitions, and together all of them: the group has settled.
        def settled() -> bool:
            owned = [w.assigned_partitions() for w in workers]
            return all(owned) and sum(owned) == spec.input.partitions  # type: ignore[arg-type]

        wait_until(settled, timeout=90, workers=workers)
        generator = make_generator(spec, seed=5)
        events = [generator.next_event(datetime.now(UTC)) for _ in range(1000)]
        messages = [(e["transaction_id"].encode(), orjson.dumps(e)) for e in events]
        asyncio.run(produce(settings.kafka_bootstrap_servers, spec.input.topic, messages))
        out = asyncio.run(
            consume(settings.kafka_bootstrap_servers, [spec.output.topic], len(events), 90)
        )
        scored_by = [w.metric("streamscore_predictions_total") for w in workers]
    finally:
        codes = [w.stop() for w in workers]

    ids = [orjson.loads(r.value)["event_id"] for r in out[spec.output.topic]]
    assert sorted(ids) == sorted(e["transaction_id"] for e in events)
    assert all(scored_by) and sum(scored_by) == len(events), scored_by  # type: ignore[arg-type]
    assert codes == [0, 0]
