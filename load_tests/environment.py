"""Where a load run happens: an embedded broker (Apache Kafka by default, Tansu on request:
``STREAMSCORE_EMBEDDED_BROKER``, streams/runtime/brokers.py) and Redis, and an isolated copy of a
pipeline.

The pipeline is prepared as the integration tests prepare theirs (``streams.cli.bootstrap.
prepare_copy``): its Feast repo is copied into a work folder, offline data written, applied
and materialized into this run's Redis, and its models trained into the work folder's
registry if they are not there yet. Each system under test then runs a *variant*: the same
repo and models under its own pipeline name (so its own consumer group) and its own topics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streams.cli.bootstrap import prepare_copy
from streams.runtime.brokers import EmbeddedBroker, choose_broker
from streams.runtime.connections import KafkaConnection
from streams.runtime.embedded import EmbeddedRedis, free_port
from streams.runtime.topics import ensure_topics, spec_topics
from streams.settings import Settings
from streams.spec import PipelineSpec, load_spec

# Kafka's minimum: a worker that dies is replaced in its group within this.
SESSION_TIMEOUT = 6.0


@dataclass
class Environment:
    spec: PipelineSpec  # the prepared pipeline (its repo inside ``workdir``)
    settings: Settings  # connections and runtime settings every worker starts from
    workdir: Path
    server_pids: dict[str, int] = field(default_factory=dict)  # for CPU accounting
    kafka: EmbeddedBroker | None = None  # the embedded broker
    redis: EmbeddedRedis | None = None  # the embedded Redis (the fault suite restarts it)

    @property
    def broker_kind(self) -> str:
        return self.kafka.kind if self.kafka is not None else "external"

    @property
    def restarts_broker(self) -> bool:
        """Tansu only: restarted empty between systems (``fresh_broker``)."""
        return self.broker_kind == "tansu"

    def fresh_broker(self) -> None:
        """Restart Tansu, same port, empty memory storage. Tansu keeps every record in
        memory and its CPU per request grows with what it stores, so each system is measured
        on a broker holding nothing else (measured: systems run later in a run met a broker
        using a whole core where the first used half of one). Apache Kafka finds a fetch
        offset through an index and is never restarted."""
        if self.kafka is None or not self.restarts_broker:
            return
        self.kafka.stop()
        self.kafka.start()
        assert self.kafka.process is not None
        self.server_pids["broker"] = self.kafka.process.pid

    def worker_settings(self) -> Settings:
        """The settings of one more worker process: its own /metrics port on loopback."""
        return self.settings.model_copy(
            update={"metrics_port": free_port(), "metrics_host": "127.0.0.1"}
        )

    def variant(self, suffix: str, **changes: Any) -> Variant:
        """The prepared spec under its own name and topics, written to a file for a worker;
        ``changes`` replace top-level sections (e.g. ``monitoring``)."""
        doc: dict[str, Any] = self.spec.model_dump(mode="json", exclude_none=True)
        doc.update(changes)
        doc["name"] = f"{self.spec.name}-{suffix}"
        doc["input"]["topic"] = f"{self.spec.input.topic}-{suffix}"
        output = doc["output"]
        for key in ("topic", "dead_letter_topic", "shadow_topic"):
            if key in output:
                output[key] = f"{output[key]}-{suffix}"
        labels = doc.get("labels")
        if isinstance(labels, dict) and "topic" in labels:
            labels["topic"] = f"{labels['topic']}-{suffix}"
        path = self.workdir / f"spec-{suffix}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return Variant(path, load_spec(path))


@dataclass
class Variant:
    path: Path
    spec: PipelineSpec

    @property
    def labels_topic(self) -> tuple[str, int]:
        """Where labels go: the spec's labels topic if it declares one (the pipeline joins
        them), else ``<input topic>-labels`` (nobody consumes it yet)."""
        labels = getattr(self.spec, "labels", None)
        if labels is not None:
            return labels.topic, labels.partitions
        return f"{self.spec.input.topic}-labels", self.spec.input.partitions

    async def create_topics(self, kafka: KafkaConnection) -> None:
        topics = spec_topics(self.spec)
        name, partitions = self.labels_topic
        topics[name] = partitions
        await ensure_topics(kafka, topics)


def prepare(spec_path: Path, workdir: Path, settings: Settings) -> tuple[PipelineSpec, list[str]]:
    """Copy the spec's Feast repo into ``workdir``, apply + materialize it, train if needed.

    Returns the prepared spec and what was trained (empty when the models were there)."""
    spec, trained = prepare_copy(spec_path, workdir, settings)
    return spec, [f"{v.name} v{v.version}" for v in trained]


@contextlib.contextmanager
def embedded(
    spec_path: Path,
    workdir: Path,
    log_level: str,
    say: Callable[[str], None],
    *,
    persistent_redis: bool = False,
) -> Iterator[Environment]:
    """The embedded broker + Redis on free loopback ports, the pipeline prepared in
    ``workdir``; both servers are stopped on exit, whatever happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    base = Settings(
        model_dir=workdir / "models",
        data_dir=workdir / "state",
        metrics_port=0,
        metrics_host="127.0.0.1",
        kafka_session_timeout_seconds=SESSION_TIMEOUT,
        log_level=log_level,  # type: ignore[arg-type]
    )
    choice = choose_broker(base)
    say(choice.why)
    with choice.broker as kafka, EmbeddedRedis(persistent=persistent_redis) as redis:
        say(f"{kafka.describe()} {kafka.bootstrap_servers}, Redis {redis.url}")
        settings = redis.client_settings(choice.client_settings(base)).model_copy(
            update={"embedded_broker": kafka.kind}
        )
        spec, trained = prepare(spec_path, workdir, settings)
        say(
            "feature repo applied and materialized; "
            + (f"trained {', '.join(trained)}" if trained else "models already registered")
        )
        pids = {}
        for name, server in (("broker", kafka), ("redis", redis)):
            if server.process is not None:
                pids[name] = server.process.pid
        yield Environment(spec, settings, workdir, pids, kafka, redis)
