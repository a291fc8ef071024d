"""The worker consumer takes the fetch settings Faust has no setting for."""

from __future__ import annotations

from pathlib import Path

from streams.app import create_app
from streams.settings import Settings
from tests.unit.test_pipeline import SPEC


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
    assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (77, 12_345)  # noqa: SLF001
