"""Feature freshness in a real worker: ``features.max_age_seconds`` against rows of known ages.

Rows are written straight into the online store with chosen event timestamps (a new card
each, so no materialized row is newer), then one event per card goes through a real
``streamscore worker`` whose spec limits the view's age; the prediction records, and the
worker's counters, say what was served.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from features.store import open_store
from streams.cli.generators import make_generator
from streams.runtime.connections import RedisConnection
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from streams.spec import feature_column
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    wait_until,
    write_card_stats,
)

pytestmark = pytest.mark.integration

MAX_AGE = 2 * 86_400.0  # the demo view's ttl, which Feast does not apply on reads


def test_a_stale_row_is_defaulted_and_flagged_in_a_real_workers_record(
    card_fraud: PreparedPipeline,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = card_fraud.settings.model_copy(update={"metrics_port": free_port()})
    features = card_fraud.spec.features.model_dump(mode="json", exclude_none=True)
    spec_path, spec = card_fraud.variant(
        suffix, features={**features, "max_age_seconds": {"card_stats": MAX_AGE}}
    )
    now = datetime.now(UTC)
    stale, fresh = f"card-stale-{suffix}", f"card-fresh-{suffix}"
    store = open_store(spec.features.repo, RedisConnection.from_settings(settings))
    write_card_stats(store, {stale: 999.0}, at=now - timedelta(days=3))
    write_card_stats(store, {fresh: 777.0}, at=now - timedelta(minutes=10))

    generator = make_generator(spec, seed=5)
    events = {}
    for card in (stale, fresh, f"card-unknown-{suffix}"):
        event = generator.next_event(now)
        event[spec.entity.field] = card
        events[card] = event
    id_field = spec.event.id_field
    messages = [(str(e[id_field]).encode(), orjson.dumps(e)) for e in events.values()]
    asyncio.run(create_topics(settings, spec))
    asyncio.run(produce(settings.kafka_bootstrap_servers, spec.input.topic, messages))
    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")
    try:
        out = asyncio.run(
            consume(
                settings.kafka_bootstrap_servers, [spec.output.topic], count=3, timeout=120,
                worker=worker,
            )
        )  # fmt: skip
        labels = {"pipeline": spec.name, "reason": "stale"}
        wait_until(
            lambda: worker.metric("streamscore_defaulted_features_total", **labels) is not None,
            30, [worker], "the worker's counters",
        )  # fmt: skip
        stale_count = worker.metric("streamscore_defaulted_features_total", **labels)
    finally:
        worker.stop()
    records = [orjson.loads(r.value) for r in out.get(spec.output.topic, [])]
    by_card = {r["entity_key"]: r for r in records}
    assert set(by_card) == set(events), worker.log_tail(40)

    defaults = {feature_column(r): v for r, v in spec.features.defaults.items()}
    old = by_card[stale]
    assert old["stale_views"] == ["card_stats"] and old["entity_found"] is True
    assert old["features"] == defaults  # not the stored 999.0
    assert sorted(old["defaulted_features"]) == sorted(defaults)
    assert old["feature_age_seconds"]["card_stats"] == pytest.approx(3 * 86_400, abs=1e-3)

    new = by_card[fresh]
    assert new["stale_views"] == [] and new["defaulted_features"] == []
    assert new["features"]["card_stats__avg_amount_30d"] == 777.0
    assert new["feature_age_seconds"]["card_stats"] == pytest.approx(600, abs=1e-3)

    unknown = by_card[f"card-unknown-{suffix}"]
    assert unknown["feature_age_seconds"] == {"card_stats": None}
    assert unknown["stale_views"] == [] and unknown["entity_found"] is False

    assert stale_count == len(defaults)  # the stale row's five values, and nothing else
