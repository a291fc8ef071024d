"""The Faust app and its agent. The agent is thin: take a micro-batch, hand it to the
scoring service, then ack. All the work lives in plain-Python services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from faust.types import TP, EventT

from streams.records import InputMessage
from streams.service import ScoringService
from streams.settings import Settings
from streams.spec import PipelineSpec
from streams.transport import StreamscoreApp

log = logging.getLogger(__name__)


def kafka_urls(bootstrap_servers: str) -> list[str]:
    """'h1:9092,h2:9092' -> ['kafka://h1:9092', 'kafka://h2:9092'] (Faust's broker form)."""
    return [
        f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()
    ]


def create_app(spec: PipelineSpec, settings: Settings) -> faust.App:
    datadir = settings.data_dir / spec.name
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return StreamscoreApp(
        f"streamscore-{spec.name}",  # also the consumer group: one group per pipeline
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        broker=kafka_urls(settings.kafka_bootstrap_servers),
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
    )


def track_assignment(app: faust.App, spec: PipelineSpec, gauge: Any) -> None:
    """Keep ``gauge`` at the number of input partitions this worker owns (its readiness)."""
    owned: set[TP] = set()

    # Faust's receiver type leaves out the signal's positional payload (the partitions).
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        owned.difference_update(revoked)
        gauge.set(len(owned))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        owned.update(tp for tp in assigned if tp.topic == spec.input.topic)
        gauge.set(len(owned))


def attach_scoring_agent(app: faust.App, spec: PipelineSpec, service: ScoringService) -> Any:
    source = app.topic(
        spec.input.topic,
        partitions=spec.input.partitions,
        key_type=bytes,
        value_type=bytes,
    )
    outputs = [
        app.topic(spec.output.topic, partitions=spec.output_partitions),
        app.topic(spec.output.dead_letter_topic, partitions=spec.output_partitions),
    ]
    max_size = spec.batch.max_size
    max_wait = spec.batch.max_wait_ms / 1000.0

    async def score(stream: faust.StreamT[bytes]) -> None:
        for topic in outputs:
            await topic.maybe_declare()
        # noack_take: events are acked by us, only after their outputs are delivered. It
        # yields events (not values) whatever its annotation says, and StreamT lacks it.
        batches: AsyncIterator[list[EventT[bytes]]] = cast(Any, stream).noack_take(
            max_size, within=max_wait
        )
        async for events in batches:
            messages = [_input_message(event) for event in events]
            await service.handle(messages)
            for event in events:
                await stream.ack(event)

    return app.agent(source, name=f"{spec.name}.score")(score)


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
