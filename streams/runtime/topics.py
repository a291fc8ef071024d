"""Create a spec's topics with their declared partition counts (idempotent), and say which
existing ones differ from the spec.

Workers call ``declare_topics`` at start, so a broker with automatic topic creation off
(Apache Kafka as the project runs it, most managed clusters) works without a separate step,
and a broker with it on never creates ours with its own default partition count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.errors import Unreachable
from streams.runtime.connections import KafkaConnection
from streams.settings import Settings
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)


def spec_topics(spec: PipelineSpec) -> dict[str, int]:
    """Topic name -> partitions for everything the pipeline reads or writes."""
    out = spec.output_partitions
    topics = {
        spec.input.topic: spec.input.partitions,
        spec.output.topic: out,
        spec.output.dead_letter_topic: out,
        # One record per closed drift window and worker: one partition keeps them in order.
        spec.monitoring_topic: 1,
        # Every promotion, refusal and rollback, in the order they happened: one partition.
        spec.actions_topic: 1,
    }
    if spec.shadows or spec.online:
        topics[spec.shadow_topic] = out
    if spec.labels is not None:
        topics[spec.labels.topic] = spec.labels.partitions
    if spec.labelled_topic is not None:
        # One record per label batch from the one learner: one partition keeps their order.
        topics[spec.labelled_topic] = 1
    return topics


async def ensure_topics(
    kafka: KafkaConnection, topics: dict[str, int], replication: int = 1
) -> dict[str, int]:
    """Create the missing ``topics``; returns the existing ones whose partition count differs
    from the one asked for (name -> partitions they have)."""
    admin = kafka.admin()
    await kafka.start(admin)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, replication)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if missing:
            # Another process may create one meanwhile: the outcome is the same.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        present = [name for name in topics if name in existing]
        if not present:
            return {}
        described = await admin.describe_topics(present)
        # The field is 'topic' in older Metadata response versions, 'name' in newer ones.
        have = {
            d.get("topic") or d.get("name"): len(d["partitions"])
            for d in described
            if not d.get("error_code")
        }
        return {name: n for name, n in have.items() if n != topics[name]}
    finally:
        await admin.close()


async def topic_partitions(kafka: KafkaConnection, topic: str) -> int | None:
    """How many partitions ``topic`` has, or None if it does not exist."""
    admin = kafka.admin()
    await kafka.start(admin)
    try:
        if topic not in set(await admin.list_topics()):
            return None
        (described,) = await admin.describe_topics([topic])
        return None if described.get("error_code") else len(described["partitions"])
    finally:
        await admin.close()


async def declare_topics(
    spec: PipelineSpec, kafka: KafkaConnection, replication: int = 1
) -> dict[str, int]:
    """``ensure_topics`` for the spec's topics, logging each one that differs from the spec."""
    wanted = spec_topics(spec)
    differing = await ensure_topics(kafka, wanted, replication)
    for name, partitions in sorted(differing.items()):
        log.warning(
            "pipeline %s: topic %r has %d partitions, the spec declares %d (it is used as it"
            " is; recreate it or change the spec to match)",
            spec.name, name, partitions, wanted[name],
        )  # fmt: skip
    return differing


async def declare_topics_in_time(spec: PipelineSpec, settings: Settings) -> dict[str, int]:
    """``declare_topics`` within ``kafka_connect_timeout_seconds`` (``Unreachable`` past it):
    a worker at start, and ``streamscore produce`` (a broker that creates no topics would
    otherwise keep the producer waiting for metadata, then fail)."""
    from streams.runtime.reach import BROKER_NAME, KAFKA

    timeout = settings.kafka_connect_timeout_seconds
    servers = settings.kafka_bootstrap_servers
    kafka = KafkaConnection.from_settings(settings)
    try:
        async with asyncio.timeout(timeout):
            return await declare_topics(spec, kafka, settings.topic_replication_factor)
    except TimeoutError as exc:
        detail = f"creating the spec's topics took over {timeout:g} s"
        raise Unreachable(BROKER_NAME, servers, KAFKA, detail) from exc
