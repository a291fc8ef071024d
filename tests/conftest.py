"""Session-scoped real servers (Tansu broker, redis-server) and per-test isolation helpers.

Integration tests share one broker and one Redis per session and isolate themselves with
unique topic names, consumer groups and Redis databases/prefixes, as Quix Streams and Bytewax
do in their own suites.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.embedded import EmbeddedKafka, EmbeddedRedis
from streams.settings import Settings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with EmbeddedKafka() as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as redis:
        yield redis.url


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names, consumer groups and app ids."""
    return uuid.uuid4().hex[:10]


REPO_ROOT = Path(__file__).resolve().parent.parent
CARD_FRAUD_SPEC = REPO_ROOT / "streams" / "specs" / "card_fraud.yaml"
ETA_SPEC = REPO_ROOT / "tests" / "specs" / "eta" / "spec.yaml"


@pytest.fixture(scope="session")
def base_settings(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    root = tmp_path_factory.mktemp("streamscore")
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        redis_url=redis_url,
        model_dir=root / "models",
        data_dir=root / "state",
        metrics_port=0,
        kafka_session_timeout_seconds=6.0,  # Tansu's first join waits half of it
        kafka_fetch_max_wait_ms=10,  # Tansu holds fetches about half of it
        log_level="warn",
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
