"""Whether the servers a command needs answer, asked once before it starts, within
``Settings.kafka_connect_timeout_seconds``: a wrong address, or one that accepts and never
answers, then ends the command with one line naming the address and the setting, instead of
a traceback after the clients' own timeouts (40 s and more)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from streams.errors import Unreachable
from streams.runtime.connections import ConnectionFailed, KafkaConnection, RedisConnection, redact
from streams.settings import Settings

KAFKA = "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS"
REDIS = "STREAMSCORE_REDIS_URL"
BROKER_NAME, REDIS_NAME = "Kafka broker", "Redis"


async def check_kafka(settings: Settings) -> None:
    """Raise ``Unreachable`` unless a broker of ``kafka_bootstrap_servers`` answers a
    metadata request in time."""
    async with _admin_in_time(settings):
        pass


async def missing_topics(settings: Settings, topics: list[str]) -> list[str]:
    """Which of ``topics`` the broker does not have (a reader would wait on them)."""
    async with _admin_in_time(settings) as admin:
        existing = set(await admin.list_topics())
    return [topic for topic in topics if topic not in existing]


@contextlib.asynccontextmanager
async def _admin_in_time(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; the start and whatever the caller asks of it together within
    ``kafka_connect_timeout_seconds``, else ``Unreachable`` naming the address."""
    servers = settings.kafka_bootstrap_servers
    timeout = settings.kafka_connect_timeout_seconds
    kafka = KafkaConnection.from_settings(settings)
    admin = kafka.admin(request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            with _quiet(logging.getLogger("aiokafka")):  # the one line below says it all
                await kafka.start(admin)
                yield admin
    except TimeoutError as exc:
        raise Unreachable(BROKER_NAME, servers, KAFKA, f"no answer in {timeout:g} s") from exc
    except ConnectionFailed as exc:
        if exc.refused:
            raise  # it answered, and said no: the message names the credentials used
        raise Unreachable(BROKER_NAME, servers, KAFKA, exc.cause) from exc
    except (KafkaError, OSError) as exc:
        raise Unreachable(BROKER_NAME, servers, KAFKA, _why(exc)) from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def check_redis(settings: Settings) -> None:
    """Raise ``Unreachable`` unless Redis at ``redis_url`` answers a PING in time."""
    timeout = settings.kafka_connect_timeout_seconds
    shown = redact(settings.redis_url)
    try:
        client = RedisConnection.from_settings(settings).client(
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), retries=0),
        )
    except ValueError as exc:  # not a redis:// URL
        raise Unreachable(REDIS_NAME, shown, REDIS, _why(exc)) from exc
    try:
        client.ping()
    except redis.AuthenticationError as exc:  # it answered, and said no
        redis_connection = RedisConnection.from_settings(settings)
        msg = f"connect: cannot connect to Redis at {redis_connection.describe()}: {_why(exc)}"
        raise ConnectionFailed(msg) from exc
    except redis.RedisError as exc:
        raise Unreachable(REDIS_NAME, shown, REDIS, _why(exc)) from exc
    finally:
        client.close()


def _why(exc: BaseException) -> str:
    text, kind = " ".join(str(exc).split()), type(exc).__name__
    if not text or text == kind:
        return kind
    return text if text.startswith(kind) else f"{kind}: {text}"


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """No log records from ``logger`` (its retries' warnings) while the check runs."""
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
