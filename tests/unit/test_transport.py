"""The worker's Kafka clients take the settings Faust has no setting (or a poor default) for."""

from __future__ import annotations

import time
from pathlib import Path

from streams.runtime.app import create_app
from streams.scoring.records import encode_prediction, iso_utc
from streams.settings import Settings
from streams.spec import feature_column, load_spec
from tests.unit.test_pipeline import SPEC

DEMO_SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"


async def test_the_worker_consumer_fetches_with_the_configured_wait_and_minimum(
    tmp_path: Path,
) -> None:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9",  # never contacted: the consumer is not started
        data_dir=tmp_path,
        kafka_fetch_max_wait_ms=77,
        kafka_fetch_min_bytes=12_345,
    )
    app = create_app(SPEC, settings)
    thread = app.consumer._thread  # noqa: SLF001 - where Faust builds the aiokafka consumer
    consumer = thread._create_worker_consumer(app.transport)  # noqa: SLF001
    try:
        assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (77, 12_345)  # noqa: SLF001
    finally:
        await consumer.stop()


async def test_a_full_demo_micro_batch_fits_one_producer_batch_even_on_one_partition(
    tmp_path: Path,
) -> None:
    # The producer sends one record batch per partition per request: a partition whose
    # records overflow one batch costs the publish another broker round trip.
    spec = load_spec(DEMO_SPEC)
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9", data_dir=tmp_path)
    app = create_app(spec, settings)
    producer = app.producer._new_producer()  # noqa: SLF001 - built as the worker's, not started
    now = time.time()
    value = encode_prediction(
        event_id="9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
        entity_key="card-0001234",
        model=spec.model.name,
        version=12,
        score=0.123456789012,
        decision=False,
        features={feature_column(ref): 12345.678901 for ref in spec.features.refs},
        defaulted=[],
        entity_found=True,
        event_time=iso_utc(now),
        scored_at=iso_utc(now),
    )
    try:
        batch = producer.create_batch()
        for _ in range(spec.batch.max_size):
            assert batch.append(key=b"card-0001234", value=value, timestamp=None) is not None
    finally:
        await producer.stop()
