"""Session-scoped real servers (a Kafka broker, redis-server) and per-test isolation helpers.

Integration tests share one broker and one Redis per session and isolate themselves with
unique topic names, consumer groups and Redis databases/prefixes, as Quix Streams and Bytewax
do in their own suites. The broker is Apache Kafka where Java 17+ (and Maven, the first
time) are present, else Tansu; ``STREAMSCORE_EMBEDDED_BROKER`` chooses (streams/runtime/brokers.py).
Tests marked ``tansu`` also run on an embedded Tansu, so both brokers stay proven.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streams.runtime.brokers import BrokerChoice, choose_broker
from streams.runtime.embedded import EmbeddedRedis, EmbeddedTansu
from streams.settings import Settings


def pytest_report_header() -> str:
    return f"streamscore integration tests: {choose_broker(Settings()).why}"


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerChoice]:
    choice = choose_broker(Settings())
    with choice.broker:
        yield choice


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: BrokerChoice) -> str:
    return broker.broker.bootstrap_servers


@pytest.fixture(scope="session")
def broker_kind(broker: BrokerChoice) -> str:
    return broker.broker.kind


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as redis:
        yield redis.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client of the session's Redis, closed after the test."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names, consumer groups and app ids."""
    return uuid.uuid4().hex[:10]


REPO_ROOT = Path(__file__).resolve().parent.parent
CARD_FRAUD_SPEC = REPO_ROOT / "streams" / "specs" / "card_fraud.yaml"
ETA_SPEC = REPO_ROOT / "tests" / "specs" / "eta" / "spec.yaml"


@pytest.fixture(scope="session")
def base_settings(
    broker: BrokerChoice, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    root = tmp_path_factory.mktemp("streamscore")
    settings = Settings(
        redis_url=redis_url,
        model_dir=root / "models",
        data_dir=root / "state",
        metrics_port=0,
        # Kafka's minimum; a worker that dies is replaced in its group within this.
        kafka_session_timeout_seconds=6.0,
        log_level="warn",
        embedded_broker=broker.broker.kind,
    )
    return broker.client_settings(settings)


@pytest.fixture(scope="session")
def tansu_settings(base_settings: Settings, broker: BrokerChoice) -> Iterator[Settings]:
    """``base_settings`` on an embedded Tansu: the session's broker if it is Tansu, else
    one started for the ``tansu`` tests."""
    if broker.broker.kind == "tansu":
        yield base_settings
        return
    with EmbeddedTansu() as tansu:
        yield base_settings.model_copy(
            update={
                "kafka_bootstrap_servers": tansu.bootstrap_servers,
                "embedded_broker": "tansu",
                **tansu.client_tuning,
            }
        )


@pytest.fixture(scope="session")
def card_fraud(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    from tests.integration.harness import PreparedPipeline

    return PreparedPipeline.prepare(
        CARD_FRAUD_SPEC, tmp_path_factory.mktemp("card_fraud"), base_settings
    )


@pytest.fixture(scope="session")
def delivery_eta(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    from tests.integration.harness import PreparedPipeline

    return PreparedPipeline.prepare(ETA_SPEC, tmp_path_factory.mktemp("eta"), base_settings)
