"""Data quality in a real worker: one window of controlled events (some lacking an optional
field, some at the amount's declared max, some for a card the store does not know, some with
an unknown category) shows each share in its column's gauge only, and in the window's
``quality`` record on the monitoring topic."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from features.store import open_store
from streams.cli.generators import make_generator
from streams.runtime.connections import RedisConnection
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    wait_until,
    write_card_stats,
)

pytestmark = pytest.mark.integration

WINDOW = 200  # scored events per window
ABSENT, AT_MAX, UNKNOWN_CARD, UNKNOWN_CATEGORY = 60, 20, 20, 25  # of the window's events
FEATURES = (
    "card_stats__txn_count_24h",
    "card_stats__avg_amount_30d",
    "card_stats__max_amount_30d",
    "card_stats__distinct_merchants_7d",
    "card_stats__chargeback_count_90d",
)


def test_a_real_worker_measures_each_columns_quality_per_window(
    card_fraud: PreparedPipeline,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = card_fraud.settings.model_copy(update={"metrics_port": free_port()})
    # One partition: the dead letters, sent first, count in the first window.
    spec_path, spec = card_fraud.variant(
        suffix, input_partitions=1, monitoring={"window": {"events": WINDOW}}
    )
    now = datetime.now(UTC)
    known = f"card-quality-{suffix}"
    store = open_store(spec.features.repo, RedisConnection.from_settings(settings))
    write_card_stats(store, {known: 80.0}, at=now)
    generator = make_generator(spec, seed=11)

    def event(i: int) -> dict:
        e = generator.next_event(now)
        e["transaction_id"] = f"q-{suffix}-{i}"
        e["card_id"] = known
        return e

    refused = [{**event(i), "merchant_category": "teleportation"} for i in range(UNKNOWN_CATEGORY)]
    valid = [event(UNKNOWN_CATEGORY + i) for i in range(WINDOW)]
    for e in valid[:ABSENT]:
        del e["is_foreign"]  # optional: its default (false) is served
    for e in valid[ABSENT : ABSENT + AT_MAX]:
        e["amount"] = 50_000.0  # the spec's max
    for e in valid[-UNKNOWN_CARD:]:
        e["card_id"] = f"card-nobody-{suffix}"  # every feature defaulted
    messages = [(e["transaction_id"].encode(), orjson.dumps(e)) for e in refused + valid]
    asyncio.run(create_topics(settings, spec))
    asyncio.run(produce(settings.kafka_bootstrap_servers, spec.input.topic, messages))

    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")

    def ratio(column: str, check: str) -> float | None:
        return worker.metric(
            "streamscore_data_quality_ratio", pipeline=spec.name, column=column, check=check
        )

    try:
        wait_until(
            lambda: worker.metric("streamscore_data_quality_windows_total", pipeline=spec.name)
            == 1,
            120, [worker], "a closed data quality window",
        )  # fmt: skip
        gauges = {
            (column, check): ratio(column, check)
            for column, check in [
                ("is_foreign", "missing"), ("amount", "missing"), ("amount", "at_max"),
                ("amount", "at_min"), ("merchant_category", "unknown"),
                ("merchant_category", "missing"), ("channel", "unknown"),
                *((feature, "missing") for feature in FEATURES),
            ]
        }  # fmt: skip
        received = asyncio.run(
            consume(
                settings.kafka_bootstrap_servers, [spec.monitoring_topic], 2, timeout=30,
                worker=worker,
            )
        )  # fmt: skip
    finally:
        worker.stop()

    inputs = WINDOW + UNKNOWN_CATEGORY
    assert gauges == pytest.approx(
        {
            ("is_foreign", "missing"): ABSENT / WINDOW,  # 0.3
            ("amount", "missing"): 0.0,
            ("amount", "at_max"): AT_MAX / WINDOW,  # 0.1
            ("amount", "at_min"): 0.0,
            ("merchant_category", "unknown"): UNKNOWN_CATEGORY / inputs,
            ("merchant_category", "missing"): 0.0,
            ("channel", "unknown"): 0.0,
            **{(feature, "missing"): UNKNOWN_CARD / WINDOW for feature in FEATURES},  # 0.1
        }
    )
    records = [orjson.loads(r.value) for r in received[spec.monitoring_topic]]
    (quality,) = [r for r in records if r["kind"] == "quality"]
    assert (quality["pipeline"], quality["events"], quality["dead_letters"]) == (
        spec.name, WINDOW, UNKNOWN_CATEGORY
    )  # fmt: skip
    columns = quality["columns"]
    assert columns["is_foreign"] == {"missing": 0.3}
    assert columns["amount"] == {"missing": 0.0, "at_min": 0.0, "at_max": 0.1}
    assert columns["merchant_category"] == {
        "missing": 0.0, "unknown": round(UNKNOWN_CATEGORY / inputs, 6)
    }  # fmt: skip
    assert {f: columns[f] for f in FEATURES} == dict.fromkeys(FEATURES, {"missing": 0.1})
    assert quality["window_start"] <= quality["window_end"]
