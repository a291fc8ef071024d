"""Deployment settings, read once from the environment (prefix ``STREAMSCORE_``).

What a deployment *scores* lives in the pipeline spec; how it *connects* lives here. Nothing
else in the project reads ``os.environ``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import StreamscoreError

LogLevel = Literal["crit", "error", "warn", "info", "debug"]
WorkerRole = Literal["all", "scoring", "learning"]
EmbeddedBrokerKind = Literal["auto", "kafka", "tansu"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

#: The settings that say how Kafka and Redis clients secure their connections (turned into
#: client options by ``streams.runtime.connections``; the embedded servers use none of them).
KAFKA_SECURITY_FIELDS = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "kafka_ssl_check_hostname",
)
REDIS_SECURITY_FIELDS = (
    "redis_password",
    "redis_tls",
    "redis_ssl_ca_certs",
    "redis_ssl_certfile",
    "redis_ssl_keyfile",
)

# Defaults of the input size limits, also used by ``streams.scoring.limits.InputLimits`` so that a
# service built without settings (tests, tools) applies the same limits as a worker.
DEFAULT_MAX_EVENT_BYTES = 256 * 1024
DEFAULT_MAX_KEY_BYTES = 512
#: The largest ``max_key_bytes`` accepted: a dead letter keeps up to this much of a key.
MAX_KEY_BYTES_LIMIT = 16 * 1024


class Settings(BaseSettings):
    """Connection and runtime settings. Every field maps to ``STREAMSCORE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="localhost:9092",
        description="Comma-separated host:port list of the Kafka brokers.",
    )
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        description="Redis URL of Feast's online store (redis://[:password@]host:port/db).",
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT",
        description="How every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT"
        " (SASL without TLS) or SASL_SSL (SASL over TLS, what most managed Kafka asks for).",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        default=None,
        description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); required with a"
        " SASL_* protocol, refused without one.",
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="SASL user name; required with a SASL_* protocol."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        description="SASL password; required with a SASL_* protocol. Never logged or printed.",
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the brokers' certificates (SSL,"
        " SASL_SSL); without it the system's trusted CAs are used.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None,
        description="PEM client certificate (chain) for brokers that require TLS client"
        " authentication (SSL, SASL_SSL); may also hold the key.",
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None,
        description="PEM private key of kafka_ssl_certfile, if it is not in that file.",
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True,
        description="Check that a broker's certificate names the host connected to (SSL,"
        " SASL_SSL). Turn off only for brokers whose certificates do not name their address.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="Redis password (AUTH), instead of one in redis_url. Never logged or printed.",
    )
    redis_tls: bool = Field(
        default=False,
        description="Connect to Redis over TLS (as a rediss:// redis_url does).",
    )
    redis_ssl_ca_certs: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed Redis's certificate (TLS); without it"
        " the system's trusted CAs are used.",
    )
    redis_ssl_certfile: Path | None = Field(
        default=None,
        description="PEM client certificate for a Redis that requires TLS client"
        " authentication; may also hold the key.",
    )
    redis_ssl_keyfile: Path | None = Field(
        default=None,
        description="PEM private key of redis_ssl_certfile, if it is not in that file.",
    )
    model_dir: Path = Field(
        default=Path("models/registry"),
        description="Root of the versioned model registry (one folder per model name).",
    )
    metrics_port: int = Field(
        default=9400,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus /metrics endpoint; 0 disables it.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address /metrics (and /ready, /live) binds to: loopback unless set (a"
        " container sets 0.0.0.0 so that Prometheus and probes can reach it).",
    )
    privacy_hash_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC-SHA256 that hashes the spec's privacy.hash fields (at"
        " least 16 characters; e.g. `openssl rand -hex 32`). Required by a spec that hashes"
        " fields; the same key gives the same hashes, so keep it to keep hashed ids stable.",
    )

    @field_validator("privacy_hash_key")
    @classmethod
    def _hash_key_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        # A short key makes hashed values guessable by trying keys.
        if key is not None and len(key.get_secret_value()) < 16:
            msg = "the key needs at least 16 characters"
            raise ValueError(msg)
        return key

    web_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of Faust's own web server; 0 (the default) disables it.",
    )
    kafka_session_timeout_seconds: float = Field(
        default=10.0,
        ge=3.0,
        le=300.0,
        description="Consumer-group session timeout. A worker that stops heartbeating this long"
        " loses its partitions. The embedded Tansu broker waits half of it before completing"
        " a group's first join, so the demo and tests use a shorter one.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=30_000,
        description="Longest the broker may hold a consumer fetch. Apache Kafka answers as soon"
        " as data is there; the embedded Tansu broker holds each fetch about half this long,"
        " so the demo and tests use 10 ms.",
    )
    kafka_fetch_min_bytes: int = Field(
        default=1,
        ge=1,
        le=64 * 1024 * 1024,
        description="Data a consumer fetch waits for (up to the max wait) before the broker"
        " answers (the scoring agents' consumer). 1, Kafka's default, answers as soon as"
        " anything is there. The labels consumer always uses 1: the online model's freshness"
        " depends on labels arriving at once.",
    )
    kafka_producer_max_batch_bytes: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="Largest record batch the worker's producers (the app's, the shadows')"
        " build for one partition. A"
        " publish waits for every batch, and the producer sends one batch per partition per"
        " request, so a micro-batch's records for a partition should fit one. Keep it at or"
        " under the topics' max.message.bytes (Kafka's default: 1 MiB).",
    )
    max_event_bytes: int = Field(
        default=DEFAULT_MAX_EVENT_BYTES,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest input message value (an event or a label) a worker accepts, in"
        " bytes. A larger one becomes a dead letter with reason 'too_large' that keeps only"
        " its first KiB, so it fits any topic's max.message.bytes.",
    )
    max_key_bytes: int = Field(
        default=DEFAULT_MAX_KEY_BYTES,
        ge=16,
        le=MAX_KEY_BYTES_LIMIT,
        description="Largest input message key, and largest event id, entity key and label"
        " event id (UTF-8), in bytes; these become Kafka and Redis keys. A larger one becomes"
        " a dead letter with reason 'too_large'.",
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of topics the worker creates."
    )
    log_level: LogLevel = Field(default="info", description="Worker log level.")
    worker_role: WorkerRole = Field(
        default="all",
        description="What a worker runs: 'scoring' (score events, shadows), 'learning' (join"
        " labels, train the online model) or 'all' of it in one process. Run either 'all'"
        " workers, or 'scoring' workers plus one 'learning' worker: never both kinds.",
    )
    consumer_auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a new consumer group starts reading the input topic.",
    )
    embedded_broker: EmbeddedBrokerKind = Field(
        default="auto",
        description="The broker `streamscore demo`, `streamscore servers`, the tests and the"
        " load tests start: 'kafka' (Apache Kafka from Maven Central; needs Java 17+, and"
        " Maven once), 'tansu' (a Kafka-protocol broker from a Python wheel, no Java) or"
        " 'auto': Apache Kafka where Java allows it, else Tansu.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "streamscore",
        description="Downloads kept between runs, outside git (Apache Kafka's jars).",
    )
    data_dir: Path = Field(
        default=Path(".streamscore"),
        description="Worker-local state (Faust's table store, run files).",
    )
    feature_store_retry_seconds: float = Field(
        default=60.0,
        ge=0.0,
        le=3600.0,
        description="How long a batch's Redis calls (the feature read; the label join's and"
        " the learner's prediction-store reads and checkpoint) are retried, with backoff,"
        " while Redis fails, e.g. restarting: the whole wait, attempts included. Past it the"
        " worker stops loudly (exit status 1) and the batch, never acked, is consumed again"
        " after the restart.",
    )
    batch_timeout_seconds: float = Field(
        default=120.0,
        gt=0.0,
        le=3600.0,
        description="Longest one batch may take, from its feature read to its last delivery"
        " (a producer that never answers, a read that hangs). Past it the batch fails and the"
        " worker stops, as for any failed batch; /live reports a batch running longer as"
        " stuck. Must exceed feature_store_retry_seconds.",
    )
    shutdown_timeout_seconds: float = Field(
        default=15.0,
        gt=0.0,
        le=600.0,
        description="Longest a worker takes to stop after SIGTERM/SIGINT or a failed batch."
        " Batches in flight get half of it to deliver and be acked; whatever is stuck,"
        " the process exits when it is over (status 3 if batches were abandoned: they are"
        " consumed again after a restart).",
    )

    # -- connecting and paths: how long a command waits for a server, where files live --
    kafka_connect_timeout_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=300.0,
        description="Longest a command or a starting worker waits for the Kafka broker (and"
        " Redis) to answer before it stops with one line naming the address: a wrong"
        " address, or one that accepts connections and never answers.",
    )

    # -- streamscore controller: retrain triggers and automatic promotion --
    controller_interval_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="How often `streamscore controller` checks its pipeline's retrain"
        " triggers and promotion evidence (one summary line per check).",
    )
    controller_retrain_timeout_seconds: float = Field(
        default=3600.0,
        gt=0.0,
        description="Longest a retrain from the stream may run before the controller stops"
        " it and records it as failed.",
    )

    @field_validator("model_dir", "data_dir", "cache_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Resolved once, at start-up, against the working directory: every message and
        # child process then shows and uses the same absolute folder.
        return path.expanduser().resolve()

    @model_validator(mode="after")
    def _batch_timeout_covers_the_retries(self) -> Settings:
        if self.batch_timeout_seconds <= self.feature_store_retry_seconds:
            msg = (
                f"STREAMSCORE_BATCH_TIMEOUT_SECONDS ({self.batch_timeout_seconds:g}) must"
                " exceed STREAMSCORE_FEATURE_STORE_RETRY_SECONDS"
                f" ({self.feature_store_retry_seconds:g}): a batch waiting out a store outage"
                " would otherwise be cut short"
            )
            raise ValueError(msg)
        return self

    @field_validator(
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "redis_ssl_ca_certs",
        "redis_ssl_certfile",
        "redis_ssl_keyfile",
    )
    @classmethod
    def _existing_file(cls, path: Path | None) -> Path | None:
        # Checked at start-up: a typo would otherwise surface as a TLS error at first connect.
        if path is not None and not path.is_file():
            reason = "is a folder, not a file" if path.exists() else "no such file"
            msg = f"{reason}: {path}"
            raise ValueError(msg)
        return path

    @model_validator(mode="after")
    def _consistent_transport_security(self) -> Self:
        """Refuse combinations that could only fail at the first connection, or that would
        silently ignore a setting (a CA file with PLAINTEXT, say)."""
        problem = _kafka_security_problem(self) or _redis_security_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def _kafka_security_problem(s: Settings) -> str | None:
    protocol = s.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    where = f"STREAMSCORE_KAFKA_SECURITY_PROTOCOL={protocol}"
    if sasl:
        missing = [
            name
            for name, value in (
                ("MECHANISM", s.kafka_sasl_mechanism),
                ("USERNAME", s.kafka_sasl_username),
                ("PASSWORD", s.kafka_sasl_password),
            )
            if not value
        ]
        if missing:
            names = ", ".join(f"STREAMSCORE_KAFKA_SASL_{name}" for name in missing)
            return f"{where} needs {names}"
    else:
        given = [
            name
            for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
            if getattr(s, name) is not None
        ]
        if given:
            names = ", ".join(f"STREAMSCORE_{name.upper()}" for name in given)
            return f"{names} set, but {where} uses no SASL (SASL_PLAINTEXT or SASL_SSL do)"
    if not tls:
        given = [
            name
            for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
            if getattr(s, name) is not None
        ]
        if given:
            names = ", ".join(f"STREAMSCORE_{name.upper()}" for name in given)
            return f"{names} set, but {where} uses no TLS (SSL or SASL_SSL do)"
    if s.kafka_ssl_keyfile is not None and s.kafka_ssl_certfile is None:
        return "STREAMSCORE_KAFKA_SSL_KEYFILE set without STREAMSCORE_KAFKA_SSL_CERTFILE"
    return None


def _redis_security_problem(s: Settings) -> str | None:
    url = urlsplit(s.redis_url)
    if s.redis_password is not None and url.password is not None:
        return (
            "a Redis password is set twice: in STREAMSCORE_REDIS_URL and in"
            " STREAMSCORE_REDIS_PASSWORD (keep one)"
        )
    if not (s.redis_tls or url.scheme == "rediss"):
        given = [
            name
            for name in ("redis_ssl_ca_certs", "redis_ssl_certfile", "redis_ssl_keyfile")
            if getattr(s, name) is not None
        ]
        if given:
            names = ", ".join(f"STREAMSCORE_{name.upper()}" for name in given)
            return (
                f"{names} set, but Redis is not on TLS (STREAMSCORE_REDIS_TLS=true or a"
                " rediss:// STREAMSCORE_REDIS_URL)"
            )
    if s.redis_ssl_keyfile is not None and s.redis_ssl_certfile is None:
        return "STREAMSCORE_REDIS_SSL_KEYFILE set without STREAMSCORE_REDIS_SSL_CERTFILE"
    return None


def defaults_of(names: tuple[str, ...]) -> dict[str, object]:
    """The named settings at their defaults: an embedded server's clients take the Kafka
    or Redis security settings this way (the embedded servers listen in the clear)."""
    return {
        name: Settings.model_fields[name].get_default(call_default_factory=True) for name in names
    }


class SettingsError(StreamscoreError):
    """A setting has an invalid value; the message names the environment variable."""


def load_settings() -> Settings:
    """Read the settings from the environment; called once at start-up by the CLI."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from exc


def describe_errors(exc: ValidationError) -> str:
    """One line naming each variable and what is wrong; never a secret's value (a check
    across fields gets every input, so only its message is shown)."""
    prefix = Settings.model_config.get("env_prefix", "")
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across fields: its message names the variables
            parts.append(message)
            continue
        variable = f"{prefix}{'_'.join(str(p) for p in error['loc'])}".upper()
        secret = any(_is_secret(str(part)) for part in error["loc"])
        shown = "(secret, not shown)" if secret else repr(error.get("input"))
        parts.append(f"{variable}={shown}: {message}")
    return "invalid settings: " + "; ".join(parts)


def _is_secret(name: str) -> bool:
    """Whether a setting holds a secret, whose value no message may quote."""
    field = Settings.model_fields.get(name)
    return field is not None and "SecretStr" in str(field.annotation)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``STREAMSCORE_*`` variable that is no setting (a misspelling is
    otherwise silently ignored), naming the closest known one."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    known = [f"{prefix}{name.upper()}" for name in Settings.model_fields]
    warnings = []
    for variable in sorted(environ if environ is not None else os.environ):
        if not variable.upper().startswith(prefix) or variable.upper() in known:
            continue
        close = difflib.get_close_matches(variable.upper(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see the settings table in README"
        warnings.append(f"{variable} is not a streamscore setting and is ignored ({hint})")
    return warnings
