"""Session-scoped real servers (Tansu broker, redis-server) and per-test isolation helpers.

Integration tests share one broker and one Redis per session and isolate themselves with
unique topic names, consumer groups and Redis databases/prefixes, as Quix Streams and Bytewax
do in their own suites.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streams.embedded import EmbeddedKafka, EmbeddedRedis


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
