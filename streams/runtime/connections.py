"""Every Kafka and Redis client the project creates, secured as the settings say.

The settings name a Kafka security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
SASL credentials and CA / client certificates, and a Redis password and TLS files
(``streams.settings``). This module is the one place that turns them into client options:

- aiokafka: ``security_protocol``, ``sasl_mechanism``, ``sasl_plain_username`` /
  ``_password`` and an ``ssl_context`` (``aiokafka.helpers.create_ssl_context``), for the
  producers, consumers and admin clients made here (``KafkaConnection``);
- Faust: ``broker_credentials`` (``faust.SASLCredentials`` / ``faust.SSLCredentials``),
  which Faust turns into the same aiokafka options for its consumer, producer and topic
  creation (``faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth``);
- redis-py: ``password``, TLS (``rediss://``) and ``ssl_ca_certs`` / ``ssl_certfile`` /
  ``ssl_keyfile`` (``RedisConnection``), also as options of Feast's Redis connection string.

No other module constructs an aiokafka or redis-py client (``tests/unit/test_connections.py``
fails if one does), so a client cannot be added that ignores the security settings.
Passwords stay ``SecretStr`` until handed to a client; the reprs here never show them.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from streams.errors import StreamscoreError
from streams.settings import KafkaSaslMechanism, KafkaSecurityProtocol, Settings

if TYPE_CHECKING:  # Faust takes ~0.2 s to import; only the worker needs it
    from faust.types.auth import CredentialsT

STAGE = "connect"
#: How long a start-up check waits for a server (a TLS server spoken to in the clear, say,
#: may never answer).
CHECK_TIMEOUT_SECONDS = 5.0


class ConnectionFailed(StreamscoreError):
    """A Kafka or Redis client could not connect; the message says where, how, and why
    (``cause``: the why alone). ``refused``: the server answered and refused who we are or
    how we talk (SASL credentials, TLS), as opposed to not answering at all."""

    def __init__(self, message: str, cause: str = "", *, refused: bool = False) -> None:
        super().__init__(message)
        self.cause = cause or message
        self.refused = refused


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to talk to them; makes every aiokafka client."""

    bootstrap_servers: str
    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: KafkaSaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
            ssl_check_hostname=settings.kafka_ssl_check_hostname,
        )

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def describe(self) -> str:
        """For messages: the brokers and how we connect, never the password."""
        how: str = self.security_protocol
        if self.uses_sasl:
            how += f", {self.sasl_mechanism} as {self.sasl_username!r}"
        return f"{self.bootstrap_servers} ({how})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of SSL and SASL_SSL: the CA file if given (else the system's
        CAs), the client certificate if given, hostname checked unless turned off."""
        if not self.uses_tls:
            return None
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        if not self.ssl_check_hostname:
            context.check_hostname = False
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """The security keyword arguments of any aiokafka client."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # the settings refuse SASL without one
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return options

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        import faust

        context = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None
            # With an ssl_context Faust's SASL credentials are SASL_SSL, else SASL_PLAINTEXT.
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                mechanism=self.sasl_mechanism,
                ssl_context=context,
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def producer(self, **options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, **options, **self.aiokafka_options()
        )

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *topics, bootstrap_servers=self.bootstrap_servers, **options, **self.aiokafka_options()
        )

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, **options, **self.aiokafka_options()
        )

    async def start(
        self, client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient
    ) -> None:
        """``client.start()``; a failure to reach any broker becomes one line that says why.

        aiokafka only says "Unable to bootstrap" (the cause, e.g. a refused password or an
        untrusted certificate, goes to its log), so the first broker is asked again here
        for the cause."""
        try:
            await client.start()
        except KafkaConnectionError as exc:
            cause, refused = await self._why_not(self.bootstrap_servers.split(",")[0].strip())
            msg = f"{STAGE}: cannot connect to Kafka at {self.describe()}: {cause}"
            raise ConnectionFailed(msg, cause, refused=refused) from exc

    async def _why_not(self, server: str) -> tuple[str, bool]:
        """Why the first broker cannot be used, and whether it answered and refused us (a
        TLS handshake or SASL authentication failed) rather than not answering."""
        host, _, port = server.rpartition(":") if ":" in server else (server, "", "9092")
        try:
            conn = await create_conn(
                host,
                int(port),
                request_timeout_ms=int(CHECK_TIMEOUT_SECONDS * 1000),
                **self.aiokafka_options(),
            )
        except Exception as exc:  # noqa: BLE001 - any cause is worth showing
            unanswered = isinstance(exc, OSError | TimeoutError | KafkaConnectionError)
            return _cause(exc), isinstance(exc, ssl.SSLError) or not unanswered
        conn.close()
        return "no broker answered metadata (the first one accepts connections)", False


@dataclass(frozen=True)
class RedisConnection:
    """Where Redis is and how to talk to it; makes every redis-py client and Feast's Redis
    connection string."""

    url: str
    password: SecretStr | None = field(default=None, repr=False)
    tls: bool = False
    ssl_ca_certs: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisConnection:
        return cls(
            url=settings.redis_url,
            password=settings.redis_password,
            tls=settings.redis_tls,
            ssl_ca_certs=settings.redis_ssl_ca_certs,
            ssl_certfile=settings.redis_ssl_certfile,
            ssl_keyfile=settings.redis_ssl_keyfile,
        )

    def __repr__(self) -> str:
        return f"RedisConnection({redact(self.url)!r}, tls={self.uses_tls})"

    @property
    def uses_tls(self) -> bool:
        return self.tls or urlsplit(self.url).scheme == "rediss"

    @property
    def client_url(self) -> str:
        """``url`` with the ``rediss`` scheme when TLS is on (redis-py picks its TLS
        connection by the scheme)."""
        parts = urlsplit(self.url)
        if self.uses_tls and parts.scheme == "redis":
            return urlunsplit(parts._replace(scheme="rediss"))
        return self.url

    def redis_py_options(self) -> dict[str, Any]:
        """redis-py keyword arguments besides the URL: the password and the TLS files."""
        options: dict[str, Any] = {}
        if self.password is not None:
            options["password"] = self.password.get_secret_value()
        if self.uses_tls:
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                path = getattr(self, name)
                if path is not None:
                    options[name] = str(path)
        return options

    def describe(self) -> str:
        """For messages: where Redis is and how we connect, never the password."""
        auth = (
            "password"
            if self.password is not None or urlsplit(self.url).password
            else "no password"
        )
        return f"{redact(self.url)} ({'TLS' if self.uses_tls else 'no TLS'}, {auth})"

    def check(self) -> None:
        """Raise ``ConnectionFailed`` unless Redis answers a PING with these credentials (a
        worker checks at start: a refused password would otherwise only show as feature
        reads retried for a minute)."""
        client = self.client(
            socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
        )
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            msg = f"{STAGE}: cannot connect to Redis at {self.describe()}: {_cause(exc)}"
            raise ConnectionFailed(msg) from exc
        finally:
            client.close()

    def client(self, **options: Any) -> redis.Redis:
        return redis.Redis.from_url(self.client_url, **options, **self.redis_py_options())

    def async_client(self, **options: Any) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.client_url, **options, **self.redis_py_options())

    def feast_options(self) -> list[str]:
        """``key=value`` options for Feast's Redis connection string, added to those from
        the URL: Feast passes each to redis-py (values JSON-decoded, so strings are quoted).

        >>> RedisConnection("redis://cache:6380/0", SecretStr("s3"), tls=True).feast_options()
        ['password="s3"', 'ssl=true']
        """
        options: dict[str, Any] = self.redis_py_options()
        if self.uses_tls and urlsplit(self.url).scheme != "rediss":  # rediss adds it already
            options["ssl"] = True
        return [f"{key}={json.dumps(value)}" for key, value in options.items()]


def _cause(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if name in text else f"{name}: {text}"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages.

    >>> redact("redis://:s3cret@cache:6379/0")
    'redis://:***@cache:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
