"""Apache Kafka as a single-node KRaft cluster (combined broker and controller) on loopback.

The jars come from Maven Central through ``install.kafka_classpath``. ``start`` writes a
``server.properties`` into a temp folder, formats the log folder (``StorageTool format
--standalone``), starts ``kafka.Kafka`` and waits until the broker answers a metadata
request; ``stop`` sends SIGTERM (a controlled shutdown), kills after a bound and removes the
folder. Like every embedded server, the child also dies with its parent (Linux).

The broker always listens in PLAINTEXT. Tests of secured clients add listeners (SSL,
SASL_SSL, ...) next to it with ``extra_listeners``, their settings with
``extra_properties`` and SCRAM users with ``format_arguments`` (``--add-scram``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from streams.runtime.apache_kafka.install import KAFKA_VERSION, kafka_classpath
from streams.runtime.embedded import EmbeddedServer, EmbeddedServerError, free_port

#: Heap bounds: the broker shares 2 cores and the machine with workers, Redis and tests.
JVM_OPTIONS = ["-Xms128m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
FORMAT_TIMEOUT_SECONDS = 60.0

# Settings for a one-node broker used by tests, the demo and the load tests. Everything not
# listed is Kafka's default (fetches answered as soon as data is there, 1 MiB messages).
SERVER_PROPERTIES = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    # Topics are created by the project with the spec's partition counts, never implicitly.
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    # 50 partitions by default: creating them delays the first consumer group by seconds.
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # A group's first member would otherwise wait 3 s for others before its assignment.
    "group.initial.rebalance.delay.ms": "0",
    # Small and short-lived: test and benchmark data is thrown away with the folder.
    "log.segment.bytes": str(64 * 1024 * 1024),
    "log.retention.ms": str(60 * 60 * 1000),
    "log.retention.check.interval.ms": str(60 * 1000),
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.recovery.threads.per.data.dir": "1",
    "background.threads": "2",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
}

LOG4J2_PROPERTIES = """\
# The broker's own log: warnings and errors only (the start-up banner is kept for reference).
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""


class ApacheKafka(EmbeddedServer):
    """Apache Kafka ``KAFKA_VERSION`` from Maven Central, one KRaft node, PLAINTEXT.

    ``extra_listeners`` maps more listener names to their security protocol, each on a
    port of its own (``address``); ``format_arguments`` go to ``StorageTool format``.
    """

    name = "apache-kafka broker"
    kind = "kafka"
    client_tuning: dict[str, object] = {}  # noqa: RUF012 - Kafka's defaults serve as they are

    def __init__(
        self,
        cache_dir: Path,
        port: int | None = None,
        extra_properties: dict[str, str] | None = None,
        *,
        extra_listeners: dict[str, str] | None = None,
        format_arguments: Sequence[str] = (),
    ) -> None:
        super().__init__(port)
        taken = {self.port}
        self.controller_port = _another_port(taken)
        self.listener_ports = {name: _another_port(taken) for name in extra_listeners or {}}
        self.listener_protocols = dict(extra_listeners or {})
        self.cache_dir = cache_dir
        self.extra_properties = dict(extra_properties or {})
        self.format_arguments = list(format_arguments)
        self._classpath: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def address(self, listener: str) -> str:
        """host:port of one of ``extra_listeners``."""
        return f"127.0.0.1:{self.listener_ports[listener]}"

    def describe(self) -> str:
        return f"Apache Kafka {KAFKA_VERSION} (KRaft, single node, from Maven Central)"

    def properties(self) -> dict[str, str]:
        assert self.workdir is not None
        controller = f"127.0.0.1:{self.controller_port}"
        ports = {"PLAINTEXT": self.port, **self.listener_ports}
        protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **self.listener_protocols}
        listeners = ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items())
        return {
            **SERVER_PROPERTIES,
            "listeners": f"{listeners},CONTROLLER://{controller}",
            "advertised.listeners": listeners,
            "listener.security.protocol.map": ",".join(f"{n}:{p}" for n, p in protocols.items()),
            "controller.quorum.bootstrap.servers": controller,
            "log.dirs": str(self.workdir / "data"),
            **self.extra_properties,
        }

    def _java(self, main_class: str, *args: str) -> list[str]:
        assert self.workdir is not None and self._classpath is not None
        return [
            "java",
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self._classpath}/*",
            main_class,
            *args,
        ]

    def prepare(self) -> None:
        assert self.workdir is not None
        self._classpath = kafka_classpath(self.cache_dir)
        config = self.workdir / "server.properties"
        # Multi-line values (PEM certificates and keys) as the properties format escapes them.
        lines = (f"{k}={v}".replace("\n", "\\n") for k, v in self.properties().items())
        config.write_text("".join(f"{line}\n" for line in lines))
        (self.workdir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        cluster_id = _cluster_id()
        command = self._java(
            "kafka.tools.StorageTool", "format", "--standalone",
            "-t", cluster_id, "-c", str(config), *self.format_arguments,
        )  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True,
                timeout=FORMAT_TIMEOUT_SECONDS, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            msg = f"{self.name}: formatting the log folder took over {FORMAT_TIMEOUT_SECONDS}s"
            raise EmbeddedServerError(msg) from exc
        if done.returncode != 0:
            msg = f"{self.name}: StorageTool format failed: {(done.stdout + done.stderr)[-2000:]}"
            raise EmbeddedServerError(msg)

    def command(self) -> list[str]:
        assert self.workdir is not None
        return self._java("kafka.Kafka", str(self.workdir / "server.properties"))

    def ready(self) -> bool:
        """True once the broker answers metadata (a listening port comes earlier)."""
        return super().ready() and _answers_metadata(self.bootstrap_servers)


def _another_port(taken: set[int]) -> int:
    """A free port not in ``taken`` (which it joins)."""
    port = free_port()
    while port in taken:
        port = free_port()
    taken.add(port)
    return port


def _cluster_id() -> str:
    """A KRaft cluster id (16 random bytes, URL-safe base64), never starting with '-': the
    format tool would read such an id as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _answers_metadata(bootstrap: str) -> bool:
    # A thread of its own: ``start`` may be called where an event loop is already running.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _describe_cluster(bootstrap)).result()


async def _describe_cluster(bootstrap: str) -> bool:
    from aiokafka.errors import KafkaError

    from streams.runtime.connections import KafkaConnection

    # The PLAINTEXT listener every embedded broker has (``properties``).
    admin = KafkaConnection(bootstrap).admin(request_timeout_ms=2000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()
