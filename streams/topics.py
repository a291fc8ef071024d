"""Create a spec's topics with their declared partition counts (idempotent)."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.spec import PipelineSpec


def spec_topics(spec: PipelineSpec) -> dict[str, int]:
    """Topic name -> partitions for everything the pipeline reads or writes."""
    out = spec.output_partitions
    topics = {
        spec.input.topic: spec.input.partitions,
        spec.output.topic: out,
        spec.output.dead_letter_topic: out,
    }
    if spec.shadows or spec.online:
        topics[spec.shadow_topic] = out
    if spec.labels is not None:
        topics[spec.labels.topic] = spec.labels.partitions
        topics[spec.joined_labels_topic] = 1  # one partition: one learner
    return topics


async def ensure_topics(
    bootstrap_servers: str, topics: dict[str, int], replication: int = 1
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
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
    finally:
        await admin.close()
