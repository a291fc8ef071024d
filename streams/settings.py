"""Deployment settings, read once from the environment (prefix ``STREAMSCORE_``).

What a deployment *scores* lives in the pipeline spec; how it *connects* lives here. Nothing
else in the project reads ``os.environ``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import StreamscoreError

LogLevel = Literal["crit", "error", "warn", "info", "debug"]
WorkerRole = Literal["all", "scoring", "learning"]
EmbeddedBrokerKind = Literal["auto", "kafka", "tansu"]

# Defaults of the input size limits, also used by ``streams.limits.InputLimits`` so that a
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
        " answers. 1, Kafka's default, answers as soon as anything is there; a learning worker"
        " can take a large value (labels are not urgent) to fetch a few times a second.",
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


class SettingsError(StreamscoreError):
    """A setting has an invalid value; the message names the environment variable."""


def load_settings() -> Settings:
    """Read the settings from the environment; called once at start-up by the CLI."""
    try:
        return Settings()
    except ValidationError as exc:
        prefix = Settings.model_config.get("env_prefix", "")
        lines = ["invalid settings:"]
        for error in exc.errors():
            if not error["loc"]:  # a rule across fields: its message names the variables
                lines.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            variable = f"{prefix}{'_'.join(str(p) for p in error['loc'])}".upper()
            secret = any(_is_secret(str(part)) for part in error["loc"])
            shown = "(secret, not shown)" if secret else repr(error.get("input"))
            lines.append(f"{variable}={shown}: {error['msg']}")
        raise SettingsError(" ".join(lines[:1]) + " " + "; ".join(lines[1:])) from exc


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
