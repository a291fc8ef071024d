"""The Faust app, its scoring agent and the services it runs (shadows, the labels consumer).
Agents are thin: take a micro-batch (``streams.scoring.batching``), hand it to a plain-Python
service, publish, then ack. The scoring agent keeps up to ``batch.in_flight`` batches in
flight (``streams.scoring.inflight``, default one) and acks them in order. Labels do not
go through Faust: ``streams.learning.label_consumer`` reads them with a consumer of its own.
Every agent body and batch runs under the worker's ``Lifecycle``: a failed batch stops the
worker, never leaves it half-alive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import TP, EventT
from mode import Service
from mode.utils.futures import maybe_cancel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streams.learning.label_consumer import LabelConsumer
from streams.metrics import Metrics
from streams.runtime.connections import KafkaConnection, RedisConnection
from streams.runtime.health import CHECK_SECONDS, Health
from streams.runtime.lifecycle import Lifecycle
from streams.runtime.transport import StreamscoreApp
from streams.scoring.batching import micro_batches
from streams.scoring.inflight import InFlight
from streams.scoring.publish import OwnProducer
from streams.scoring.records import InputMessage
from streams.scoring.service import ScoringService
from streams.settings import Settings
from streams.shadows.shadow import ShadowRunner
from streams.spec import PipelineSpec

LAG_REPORT_SECONDS = 2.0
#: Stable stage name of the scoring agent: agent name, health reasons, failure log lines.
#: (The labels consumer's is ``streams.learning.label_consumer.LABELS``.)
SCORE = "score"


def kafka_urls(bootstrap_servers: str) -> list[str]:
    """'h1:9092,h2:9092' -> ['kafka://h1:9092', 'kafka://h2:9092'] (Faust's broker form)."""
    return [
        f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()
    ]


def app_id(spec: PipelineSpec, settings: Settings) -> str:
    """Also the consumer group: one per pipeline, and its own for learning-only workers
    (Faust's assignor expects every member of a group to consume the same topics)."""
    suffix = "-learning" if settings.worker_role == "learning" else ""
    return f"streamscore-{spec.name}{suffix}"


def create_lifecycle(spec: PipelineSpec, settings: Settings, health: Health) -> Lifecycle:
    return Lifecycle(
        spec.name,
        batch_timeout=settings.batch_timeout_seconds,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        health=health,
    )


def create_app(
    spec: PipelineSpec, settings: Settings, lifecycle: Lifecycle | None = None
) -> StreamscoreApp:
    name = app_id(spec, settings)
    datadir = settings.data_dir / name
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    if lifecycle is None:
        lifecycle = create_lifecycle(spec, settings, Health(settings.batch_timeout_seconds))
    return StreamscoreApp(
        name,
        lifecycle=lifecycle,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        fetch_min_bytes=settings.kafka_fetch_min_bytes,
        broker=kafka_urls(settings.kafka_bootstrap_servers),
        # TLS and SASL of the app's consumer, producer and topic creation (None: PLAINTEXT).
        broker_credentials=KafkaConnection.from_settings(settings).faust_credentials(),
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset=settings.consumer_auto_offset_reset,
        topic_partitions=spec.input.partitions,
        topic_replication_factor=settings.topic_replication_factor,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_host="127.0.0.1",
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        # Heartbeats well inside the session timeout (Kafka requires < 1/3 of it).
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_seconds / 5),
        producer_linger=0.001,  # a batch's records leave together; don't wait for more
        # Faust's default, 16 KiB, split a partition's share of a full 256-event batch (the
        # old maximum) into several record batches, each one more round trip before the acks.
        producer_max_batch_size=settings.kafka_producer_max_batch_bytes,
    )


class StreamscoreWorker(faust.Worker):
    """Faust's worker, stopped through the app's ``Lifecycle``: a signal starts the stop's
    deadline, and a failed batch stops the worker as a signal would."""

    def __init__(self, app: StreamscoreApp, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.lifecycle = app.lifecycle
        self.lifecycle.on_stop_request(self.stop_soon)

    def _on_sigterm(self) -> None:
        self.lifecycle.stop_requested("SIGTERM")
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self.lifecycle.stop_requested("SIGINT")
        super()._on_sigint()

    def stop_soon(self) -> None:
        """What mode's worker does on a signal (``_schedule_shutdown``), without one: stop
        in a task that ``execute_from_commandline`` waits for before closing the loop."""
        if not self._signal_stop_time:
            self._signal_stop_time = self.loop.time()
            self._signal_stop_future = asyncio.ensure_future(self._stop_for_lifecycle())

    async def _stop_for_lifecycle(self) -> None:
        await self.stop()
        maybe_cancel(self._starting_fut)


def create_worker(app: StreamscoreApp, settings: Settings) -> faust.Worker:
    """A headless Faust worker logging at ``settings.log_level``.

    Faust's terminal spinner is dropped: at levels from warn up it sets the root logger to
    DEBUG to spin on every record, so every library debug call (aiokafka logs one per record
    sent) built a log record: 5% of a loaded worker's CPU, measured with py-spy.
    """
    worker = StreamscoreWorker(app, loglevel=settings.log_level, quiet=True)
    worker.spinner = None
    return worker


def track_assignment(app: faust.App, topic: str, gauge: Any, health: Health) -> None:
    """Keep ``gauge`` at the number of ``topic``'s partitions this worker owns, and tell
    ``health`` whether the consumer group has settled (an assignment, possibly empty)."""
    owned: set[TP] = set()

    # Faust's receiver type leaves out the signal's positional payload (the partitions).
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        owned.difference_update(revoked)
        gauge.set(len(owned))
        health.consumer_joined(False)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        owned.update(tp for tp in assigned if tp.topic == topic)
        gauge.set(len(owned))
        health.consumer_joined(True)


#: Longest a health check's Redis PING may take before it counts as failed (well inside
#: ``CHECK_SECONDS``, or Faust warns that the timer overlaps itself).
PING_TIMEOUT_SECONDS = 0.5


def attach_health_checks(app: faust.App, health: Health, redis: RedisConnection) -> None:
    """Every ``CHECK_SECONDS``, on the event loop: record that it turns and PING Redis on a
    connection of its own, with timeouts and without redis-py's own retries (1-10 s of
    backoff each): one PING, and its error is the answer."""
    client = redis.async_client(
        socket_timeout=PING_TIMEOUT_SECONDS,
        socket_connect_timeout=PING_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), retries=0),
    )

    @app.timer(interval=CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def check_health() -> None:
        health.loop_turned()
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                await client.ping()  # type: ignore[misc]  # redis-py types both clients alike
        except Exception as exc:  # any failure is the answer: not ready
            detail = str(exc) or "no answer"
            health.redis_failed(f"{type(exc).__name__}: {detail}"[:200])
        else:
            health.redis_answered()


def _raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    return app.topic(name, partitions=partitions, key_type=bytes, value_type=bytes)


class Progress:
    """Where the scoring agent is, for the consumer-lag and batch-wait metrics."""

    def __init__(self, spec: PipelineSpec, metrics: Metrics) -> None:
        self.spec = spec
        self.next_offset: dict[int, int] = {}  # partition -> offset after the last acked one
        self._lag = metrics.consumer_lag
        self._batch_wait = metrics.batch_wait_seconds.labels(spec.name)
        self._idle_since = time.perf_counter()

    def batch_taken(self) -> None:
        """The agent has a batch: how long it waited for it to fill."""
        self._batch_wait.observe(time.perf_counter() - self._idle_since)

    def waiting(self) -> None:
        """The agent waits for the next batch from now."""
        self._idle_since = time.perf_counter()

    def batch_acked(self, events: Sequence[EventT[bytes]]) -> None:
        for event in events:
            message = event.message
            if message.offset >= self.next_offset.get(message.partition, 0):
                self.next_offset[message.partition] = message.offset + 1

    def report_lag(self, app: faust.App) -> None:
        """Lag per owned input partition: its high watermark minus our next offset."""
        topic, name = self.spec.input.topic, self.spec.name
        for tp in app.consumer.assignment():
            if tp.topic != topic:
                continue
            highwater = app.consumer.highwater(tp)
            if highwater is None:
                continue
            lag = max(0, highwater - self.next_offset.get(tp.partition, 0))
            self._lag.labels(name, topic, str(tp.partition)).set(lag)


def attach_scoring_agent(
    app: StreamscoreApp, spec: PipelineSpec, service: ScoringService, progress: Progress
) -> Any:
    source = _raw_topic(app, spec.input.topic, spec.input.partitions)
    outputs = [
        app.topic(spec.output.topic, partitions=spec.output_partitions),
        app.topic(spec.output.dead_letter_topic, partitions=spec.output_partitions),
    ]
    if service.shadows:
        outputs.append(app.topic(spec.shadow_topic, partitions=spec.output_partitions))
    max_size = spec.batch.max_size
    max_wait = spec.batch.max_wait_ms / 1000.0
    lifecycle = app.lifecycle
    lifecycle.health.expect_agent(SCORE)

    async def score(stream: faust.StreamT[bytes]) -> None:
        async def ack(events: Sequence[EventT[bytes]]) -> None:
            for event in events:
                await stream.ack(event)
            progress.batch_acked(events)

        async with lifecycle.agent(SCORE):
            for topic in outputs:
                await topic.maybe_declare()
            in_flight = InFlight(spec.batch.in_flight, ack)
            try:
                async for events in micro_batches(stream, max_size, max_wait, in_flight.reserve):
                    progress.batch_taken()
                    work = service.handle([_input_message(e) for e in events])
                    in_flight.start(events, lifecycle.run_batch(SCORE, len(events), work))
                    progress.waiting()
            finally:
                # On a stop the consumer has already waited for these batches' acks
                # (``_Consumer.wait_empty``, which counts what it gave up on), and Faust
                # may cancel this task mid-drain: the drain only tidies up, within what is
                # left of the budget.
                abandoned = await in_flight.drain(lifecycle.drain_budget())
                if abandoned:
                    lifecycle.abandoned(f"{abandoned} {SCORE} batches in flight")

    @app.timer(interval=LAG_REPORT_SECONDS)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        progress.report_lag(app)

    return app.agent(source, name=f"{spec.name}.{SCORE}")(score)


class Shadows(Service):
    """The shadow runners and the producer they publish on, as one Faust-managed service.

    Started before the app's agents, stopped after them. Stopping cancels the runners
    first (a batch still queued is not scored: shadows are best-effort), then flushes and
    closes the producer, so no runner ever publishes into a closed producer."""

    def __init__(self, runners: Sequence[ShadowRunner], producer: OwnProducer) -> None:
        super().__init__()
        self._runners = list(runners)
        self._producer = producer
        self._running: dict[ShadowRunner, asyncio.Task[None]] = {}
        self._tasks_started = False

    async def on_start(self) -> None:
        await self._producer.start()
        self._running = {runner: asyncio.ensure_future(runner.run()) for runner in self._runners}
        self._tasks_started = True

    async def on_stop(self) -> None:
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        await self._producer.stop()
        for runner in self._runners:
            runner.close()

    def add(self, runner: ShadowRunner) -> None:
        """Run one more shadow from now on (the challenger, when its alias is set)."""
        self._runners.append(runner)
        if self._tasks_started:
            self._running[runner] = asyncio.ensure_future(runner.run())

    def remove(self, runner: ShadowRunner) -> None:
        """Stop a shadow: what it has queued is not scored (shadows are best-effort)."""
        self._runners.remove(runner)
        task = self._running.pop(runner, None)
        if task is not None:
            task.cancel()
        runner.close()


def attach_shadows(
    app: faust.App, runners: Sequence[ShadowRunner], producer: OwnProducer, *, more: bool = False
) -> Shadows | None:
    """Run ``runners`` with the app, publishing through ``producer`` (see ``Shadows``);
    with ``more``, even none yet (a challenger may come)."""
    if not (runners or more):
        return None
    shadows = Shadows(runners, producer)
    app.add_dependency(shadows)
    return shadows


def attach_label_consumer(app: faust.App, consumer: LabelConsumer) -> None:
    """Run the labels consumer with the app: started before its agents, stopped after."""
    app.add_dependency(consumer)


def _input_message(event: Any) -> InputMessage:
    message = event.message
    return InputMessage(
        key=message.key,
        value=message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=message.timestamp,
    )
