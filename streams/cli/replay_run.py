"""``streamscore dlq replay``: read a spec's dead-letter topic and send the originals that
would now pass back to their input topic (``streams.cli.replay`` decides which).

The topic is read from the beginning up to its end offsets when the replay starts (dead
letters that arrive meanwhile, including those of resent events that fail again, wait for
the next replay). Records are handled a fetch at a time: decide each, ask the replay log
which ids were already resent (one Redis round trip), send the rest, wait until Kafka has
every one of them, then add their ids to the log (one round trip).

**The replay log** is a Redis set per pipeline, ``streamscore:<pipeline>:dlq:replayed``,
of ``event:<id>`` and ``label:<id>`` (ids as records carry them: hashed under the spec's
privacy). An id is added only once Kafka acknowledged its message, so a replay that dies
midway resends at most its last fetch again (at-least-once, as everywhere here), and a
second replay resends nothing the first one sent. Deleting the key forgets every replay.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.cli.replay import (
    ALREADY_REPLAYED,
    OUTCOMES,
    REPLAYED,
    Decision,
    ReplaySelector,
    Resend,
)
from streams.errors import ReplayError
from streams.runtime.connections import KafkaConnection, RedisConnection
from streams.runtime.topics import topic_partitions
from streams.scoring.limits import InputLimits
from streams.scoring.prediction_store import Keys
from streams.scoring.privacy import Privacy
from streams.scoring.records import ORIGINAL_KEY_KEPT_BYTES, ORIGINAL_VALUE_KEPT_BYTES
from streams.settings import Settings
from streams.spec import PipelineSpec

#: Header naming the dead letter a resent message came from: ``<topic>/<partition>/<offset>``.
REPLAY_HEADER = "streamscore-replayed-from"
FETCH_RECORDS = 500
PROGRESS_SECONDS = 1.0


@dataclass
class ReplayReport:
    """What a replay did: dead letters per outcome, and why those still invalid are."""

    topic: str
    dry_run: bool
    total: int = 0  # dead letters in the topic when the replay started
    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    still_invalid: Counter[str] = field(default_factory=Counter)  # by current reason

    def count(self, decision: Decision) -> None:
        self.read += 1
        self.outcomes[decision.outcome] += 1
        if decision.outcome != REPLAYED and decision.reason:
            self.still_invalid[decision.reason] += 1

    def progress_line(self) -> str:
        sent = "would replay" if self.dry_run else "replayed"
        parts = [f"{self.outcomes[o]} {o.replace('_', ' ')}" for o in OUTCOMES[1:4]]
        return (
            f"dlq replay {self.topic}: {self.read}/{self.total} dead letters read,"
            f" {self.outcomes[REPLAYED]} {sent}, {', '.join(parts)}"
        )


def to_resend(
    decisions: Sequence[Decision], logged: set[str], seen: set[str], *, force: bool
) -> list[Decision]:
    """The decisions after the replay log: a candidate whose id the log (``logged``) or this
    run (``seen``, updated) already has becomes ``already_replayed``, unless ``force``; a
    run never sends one id twice."""
    out = []
    for decision in decisions:
        resend = decision.resend
        if resend is not None:
            identity = resend.identity
            if identity in seen or (identity in logged and not force):
                decision = Decision(ALREADY_REPLAYED)
            else:
                seen.add(identity)
        out.append(decision)
    return out


class ReplayLog:
    """The ids already resent (a Redis set; see the module docstring)."""

    def __init__(self, client: aioredis.Redis, pipeline: str) -> None:
        self._client = client
        self.key = Keys(pipeline).replayed

    async def logged(self, identities: list[str]) -> set[str]:
        if not identities:
            return set()
        flags = await self._client.smismember(self.key, identities)  # type: ignore[misc]
        return {identity for identity, flag in zip(identities, flags, strict=True) if flag}

    async def add(self, identities: list[str]) -> None:
        if identities:
            await self._client.sadd(self.key, *identities)  # type: ignore[misc]


async def replay(
    spec: PipelineSpec,
    settings: Settings,
    selector: ReplaySelector,
    *,
    dry_run: bool = False,
    progress: Callable[[ReplayReport], None] = lambda report: None,
    clock: Callable[[], float] = time.time,
) -> ReplayReport:
    """Replay the spec's dead letters; ``progress`` is called about once a second."""
    topic = spec.output.dead_letter_topic
    kafka = KafkaConnection.from_settings(settings)
    partitions = await _partitions(kafka, topic)
    report = ReplayReport(topic, dry_run)
    client = RedisConnection.from_settings(settings).async_client()
    log = ReplayLog(client, spec.name)
    consumer = kafka.consumer(
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=2 * 1024 * 1024,  # a dead letter can be ~730 KiB
    )
    producer = kafka.producer(
        acks="all",
        # An original is at most its kept sizes (larger ones are truncated, never resent).
        max_request_size=ORIGINAL_VALUE_KEPT_BYTES + ORIGINAL_KEY_KEPT_BYTES + 64 * 1024,
    )
    await kafka.start(consumer)
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        report.total = sum(ends[tp] - starts[tp] for tp in partitions)
        pending = {tp for tp in partitions if ends[tp] > starts[tp]}
        if not dry_run and pending:
            await kafka.start(producer)
        seen: set[str] = set()
        reported_at = time.monotonic()
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=FETCH_RECORDS)
            for tp, records in fetched.items():
                records = [r for r in records if r.offset < ends[tp]]
                now = clock()
                decisions = [selector.decide(r.value, now) for r in records]
                identities = [d.resend.identity for d in decisions if d.resend is not None]
                decisions = to_resend(
                    decisions, await log.logged(identities), seen, force=selector.force
                )
                chosen = [
                    (d.resend, f"{tp.topic}/{tp.partition}/{r.offset}")
                    for d, r in zip(decisions, records, strict=True)
                    if d.resend is not None
                ]
                if not dry_run:
                    await _send(producer, chosen)
                    await log.add([resend.identity for resend, _ in chosen])
                for decision in decisions:
                    report.count(decision)
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
            if time.monotonic() - reported_at >= PROGRESS_SECONDS:
                reported_at = time.monotonic()
                progress(report)
    finally:
        await consumer.stop()
        await producer.stop()
        await client.aclose()
    return report


async def _partitions(kafka: KafkaConnection, topic: str) -> list[TopicPartition]:
    count = await topic_partitions(kafka, topic)
    if count is None:
        msg = f"dead-letter topic {topic!r} does not exist (no worker of the spec ran yet?)"
        raise ReplayError(msg)
    return [TopicPartition(topic, p) for p in range(count)]


async def _send(producer: AIOKafkaProducer, chosen: list[tuple[Resend, str]]) -> None:
    """Send every original and wait until Kafka has each of them (else raise)."""
    deliveries = [
        await producer.send(
            resend.topic,
            resend.value,
            key=resend.key,
            headers=[(REPLAY_HEADER, origin.encode())],
        )
        for resend, origin in chosen
    ]
    await asyncio.gather(*deliveries)


def build_selector(
    spec: PipelineSpec,
    settings: Settings,
    *,
    reasons: Sequence[str] = (),
    since: float | None = None,
    force: bool = False,
) -> ReplaySelector:
    """The selector for ``spec`` as a worker would validate now: the settings' size limits,
    the spec's privacy (``PrivacyError`` without a hash key it needs)."""
    privacy = Privacy.for_pipeline(spec, settings.privacy_hash_key)
    limits = InputLimits.from_settings(settings)
    return ReplaySelector(spec, limits, privacy, reasons=reasons, since=since, force=force)
