"""Helpers for integration tests on the real embedded servers.

A pipeline is prepared once per session (its feature repo copied into a temp folder, offline
data written, Feast applied and materialized, models trained into a temp registry). Each test
then runs a *variant* of it: the same repo and models, but its own pipeline name (so its own
consumer group) and its own topics.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams.cli.bootstrap import prepare_copy
from streams.runtime.connections import KafkaConnection
from streams.runtime.processes import WorkerProcess
from streams.runtime.topics import ensure_topics, spec_topics
from streams.settings import Settings
from streams.spec import PipelineSpec, load_spec


@dataclass
class PreparedPipeline:
    spec: PipelineSpec
    settings: Settings
    workdir: Path

    @classmethod
    def prepare(cls, spec_path: Path, workdir: Path, settings: Settings) -> PreparedPipeline:
        spec, _ = prepare_copy(spec_path, workdir, settings)
        return cls(spec, settings, workdir)

    def variant(
        self, suffix: str, input_partitions: int | None = None, **changes: object
    ) -> tuple[Path, PipelineSpec]:
        """The prepared spec under its own name and topics, written to a file for a worker."""
        spec = self.spec
        doc = spec.model_dump(mode="json", exclude_none=True)
        doc["name"] = f"{spec.name}-{suffix}"
        doc["input"]["topic"] = f"{spec.input.topic}-{suffix}"
        if input_partitions is not None:
            doc["input"]["partitions"] = input_partitions
        doc["output"]["topic"] = f"{spec.output.topic}-{suffix}"
        doc["output"]["dead_letter_topic"] = f"{spec.output.dead_letter_topic}-{suffix}"
        doc.update(changes)
        path = self.workdir / f"spec-{suffix}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path, load_spec(path)


async def create_topics(settings: Settings, spec: PipelineSpec) -> None:
    await ensure_topics(KafkaConnection.from_settings(settings), spec_topics(spec))


async def produce(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes | None]],
    *,
    partition: int | None = None,
    max_request_size: int = 1024 * 1024,
) -> None:
    """Send ``messages`` (key, value) in order; to one ``partition`` if given (else by key).
    aiokafka refuses a record above ``max_request_size`` before it reaches the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=max_request_size)
    await producer.start()
    try:
        deliveries = [
            await producer.send(topic, value, key=key, partition=partition)
            for key, value in messages
        ]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str | KafkaConnection,
    topics: list[str],
    count: int,
    timeout: float,
    worker: WorkerProcess | None = None,
    keys: set[bytes] | None = None,
) -> dict[str, list[ConsumerRecord]]:
    """Read ``topics`` from the beginning until ``count`` records arrived (or time out);
    ``bootstrap`` is a PLAINTEXT address or a (secured) connection.

    With ``keys``: until a record arrived for each of those keys (duplicates then count
    once)."""
    kafka = KafkaConnection(bootstrap) if isinstance(bootstrap, str) else bootstrap
    consumer = kafka.consumer(*topics, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    received: dict[str, list[ConsumerRecord]] = defaultdict(list)
    missing = set(keys) if keys is not None else None
    deadline = time.monotonic() + timeout

    def done() -> bool:
        if missing is not None:
            return not missing
        return sum(map(len, received.values())) >= count

    try:
        while not done() and time.monotonic() < deadline:
            if worker is not None and not worker.running:
                break
            batches = await consumer.getmany(timeout_ms=200)
            for partition, records in batches.items():
                received[partition.topic].extend(records)
                if missing is not None:
                    missing.difference_update(r.key for r in records)
    finally:
        await consumer.stop()
    return received


async def read_to_end(bootstrap: str, topics: dict[str, int]) -> dict[str, list[ConsumerRecord]]:
    """Every record of ``topics`` (name -> partitions) up to their end offsets now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    received: dict[str, list[ConsumerRecord]] = defaultdict(list)
    try:
        partitions = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                received[tp.topic].extend(r for r in records if r.offset < ends[tp])
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return received


def write_card_stats(store, amounts: dict[str, float], at: datetime) -> None:
    """Write the demo view's row of each card straight into the online store, timestamped
    ``at`` (any age); its features are ``amount`` as avg/max amount and 1 elsewhere. Redis
    keeps the newer of two rows: give cards the store has no row of, to write an old one."""
    cards = list(amounts)
    ones = [1] * len(cards)
    frame = pd.DataFrame(
        {
            "card_id": cards,
            "event_timestamp": [at] * len(cards),
            "txn_count_24h": ones,
            "avg_amount_30d": [amounts[c] for c in cards],
            "max_amount_30d": [amounts[c] for c in cards],
            "distinct_merchants_7d": ones,
            "chargeback_count_90d": ones,
        }
    )
    store.write_to_online_store("card_stats", frame)


def wait_until(condition, timeout: float, workers: list[WorkerProcess], what: str = "") -> None:
    """Until ``condition()``; fails with the workers' logs if one exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        logs = "\n---\n".join(w.log_tail() for w in workers)
        assert all(w.running for w in workers), f"a worker exited waiting for {what}:\n{logs}"
        assert time.monotonic() < deadline, f"{what or 'condition'}: not in {timeout}s:\n{logs}"
        time.sleep(0.1)


def start_worker(prepared: PreparedPipeline, spec_path: Path, name: str) -> WorkerProcess:
    return WorkerProcess(spec_path, prepared.settings, prepared.workdir / f"{name}.log")
