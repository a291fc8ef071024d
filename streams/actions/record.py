"""The actions topic: every action on a pipeline's models, as a JSON record, in order.

One record per action (``<pipeline>-actions`` or ``actions.topic``, one partition, keyed by
the model name):

    {"action": "promotion", "pipeline": "card_fraud", "model": "fraud_gbt",
     "alias": "champion", "from_version": 1, "to_version": 2,
     "decided_by": "ana@host-1", "evidence": {...}, "reasons": [],
     "at": "2026-11-22T23:00:00.131000Z"}

``action`` is ``promotion``, ``refusal`` (a ``--if-better`` promotion the evidence did not
support; ``reasons`` says why, ``to_version`` is the refused candidate) or ``rollback``;
``streamscore controller`` adds ``retrain_started`` (``reasons``: the triggers that held;
``to_version`` null), ``retrain_finished`` (``to_version``: the new challenger) and
``retrain_failed`` (``reasons``: the job's last error line). ``decided_by`` is
``user@host`` for a command, ``controller`` for the controller, ``guard`` for the learner's
automatic rollback. ``evidence`` is ``streams.actions.decision.Decision.evidence`` (null
for an unguarded promotion, a command's rollback or a retrain); a guard's rollback carries
``streams.actions.guard.Verdict.evidence`` (the watch, the metric of each arm, the labels,
the margin, the reason). A canary's rollback removes its alias: ``to_version`` is null. A
retrain's record also carries ``details``: the labels counted, the trigger, and for
``retrain_finished`` the new version's lineage summary (topic, rows, sha256, offsets,
held-out metrics).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import time
from typing import Any, Literal

import orjson
from aiokafka.structs import TopicPartition

from streams.runtime.connections import KafkaConnection
from streams.runtime.topics import ensure_topics, topic_partitions
from streams.scoring.records import iso_utc, json_object

Action = Literal[
    "promotion", "refusal", "rollback", "retrain_started", "retrain_finished", "retrain_failed"
]
ACTIONS: tuple[Action, ...] = (
    "promotion", "refusal", "rollback", "retrain_started", "retrain_finished", "retrain_failed",
)  # fmt: skip
CONTROLLER = "controller"
GUARD = "guard"


def who() -> str:
    """``user@host`` of the person running a command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def action_record(
    action: Action,
    *,
    pipeline: str,
    model: str,
    alias: str,
    from_version: int | None,
    to_version: int | None,
    decided_by: str,
    evidence: dict[str, Any] | None = None,
    reasons: tuple[str, ...] | list[str] = (),
    at: float | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    extra = {} if details is None else {"details": details}
    return {
        "action": action,
        "pipeline": pipeline,
        "model": model,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "decided_by": decided_by,
        "evidence": evidence,
        "reasons": list(reasons),
        "at": iso_utc(time.time() if at is None else at),
        **extra,
    }


async def publish_actions(
    kafka: KafkaConnection, topic: str, records: list[dict[str, Any]], replication: int = 1
) -> None:
    """Append ``records`` to ``topic`` (created with one partition if missing), each
    acknowledged by the broker before this returns."""
    await ensure_topics(kafka, {topic: 1}, replication)
    producer = kafka.producer(acks="all", enable_idempotence=True)
    await kafka.start(producer)
    try:
        for record in records:
            await producer.send_and_wait(topic, orjson.dumps(record), key=record["model"].encode())
    finally:
        await producer.stop()


async def read_actions(kafka: KafkaConnection, topic: str) -> list[dict[str, Any]]:
    """Every record on ``topic`` up to its end at the call, in order; records that are not
    JSON objects are skipped."""
    partitions = await topic_partitions(kafka, topic)
    if not partitions:
        return []
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    await kafka.start(consumer)
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        out: list[dict[str, Any]] = []
        while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500), timeout=30)
            for batch in batches.values():
                for message in batch:
                    record = json_object(message.value)
                    if record is not None:
                        out.append(record)
        return out
    finally:
        await consumer.stop()
