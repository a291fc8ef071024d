"""The labels consumer: labels topic -> join -> evaluate and learn -> checkpoint -> commit,
in one hop, in the one learning worker that owns the labels.

A plain aiokafka consumer, not a Faust agent: labels used to cross Faust twice (a join agent
forwarding to a one-partition topic, a learner agent reading it), and Faust's per-record
delivery, fetch and acks were ~45% of the learning worker's Python time. Here one batch from
``getmany`` is joined (``streams.learning.join``), its invalid labels dead-lettered (delivered),
its joined labels learned and checkpointed (``streams.learning.learner``), and only then are its
offsets committed. A crash anywhere before the commit replays the batch; the learned ids in
the checkpoint make the replay learn nothing twice.

Every learning worker runs one, in the consumer group ``streamscore-<pipeline>-labels``
(the same for role ``all`` and ``learning``), whose assignor gives every partition to one
member (``streams.learning.single_owner``): one logical learner, whatever the number of workers; the
others wait in the group and take over when the owner leaves or dies. A revocation waits
for the batch in progress, so the owner commits it before anyone else is assigned.

A label that finds no prediction may have outrun it (labels sent at once, a scoring worker
behind): it is held and joined again with the next batches, for up to the spec's
``labels.orphan_grace_seconds``, before it counts as an orphan. Offsets are committed only
up to the oldest held label of each partition, so a crash or a rebalance replays held
labels too (what was learned meanwhile is skipped as duplicates).

Batches are small and adaptive: whatever has arrived is taken, but a batch starts no sooner
than ``LEARN_BATCH_INTERVAL_SECONDS`` after the previous one (what arrives meanwhile joins
it). Each batch is a checkpoint (~1 ms of CPU) and a snapshot reload in every online
shadow (~0.3 ms), so at most ~100 of each per second whatever the label rate, and at most
10 ms more staleness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition
from mode import Service

from streams.learning.join import LabelJoiner
from streams.learning.labelled import LabelledLog
from streams.learning.learner import LearnerFenced, LearnerService
from streams.learning.single_owner import SingleOwnerAssignor
from streams.learning.skew_check import SkewChecker
from streams.runtime.connections import KafkaConnection
from streams.runtime.health import Health
from streams.runtime.lifecycle import Lifecycle
from streams.scoring.publish import KafkaPublisher, OwnProducer
from streams.scoring.records import InputMessage
from streams.settings import Settings
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)

#: Stable stage name: health reasons and failure log lines.
LABELS = "labels"
LABEL_BATCH_SIZE = 2048
LEARN_BATCH_INTERVAL_SECONDS = 0.01
#: How long one idle ``getmany`` waits (a stop between two waits is noticed this fast).
IDLE_POLL_MS = 200
#: How often held labels (no prediction yet) are joined again when nothing else arrives.
HELD_RETRY_MS = 50
#: Most labels held at once; past it the oldest count as orphans at once.
HELD_MAX = 65_536


def labels_group(spec: PipelineSpec) -> str:
    return f"streamscore-{spec.name}-labels"


class LabelConsumer(Service):
    """Started with the app (a Faust service dependency), stopped after its agents."""

    def __init__(
        self,
        spec: PipelineSpec,
        settings: Settings,
        lifecycle: Lifecycle,
        joiner: LabelJoiner,
        learner: LearnerService | None,
        partitions_gauge: Any,
        *,
        report_joined: bool,
        skew: SkewChecker | None = None,
    ) -> None:
        super().__init__()
        assert spec.labels is not None
        self.spec = spec
        self.topic = spec.labels.topic
        self.group = labels_group(spec)
        self._settings = settings
        self._kafka = KafkaConnection.from_settings(settings)
        self._lifecycle = lifecycle
        self._joiner = joiner
        self._learner = learner
        self._skew = skew  # monitoring.skew: checks a sample of each joined batch, off-loop
        # With role 'learning' this group's assignment is the worker's (readiness, the
        # partitions gauge); with 'all' the scoring agent's is.
        self._ownership = _Ownership(
            self, partitions_gauge, lifecycle.health if report_joined else None
        )
        self._producer = OwnProducer(
            self._kafka, settings.kafka_producer_max_batch_bytes, client_id=self.group
        )
        self._dead_letters = KafkaPublisher(self._producer)
        topic = spec.labelled_topic
        self._labelled = LabelledLog(spec, topic, self._dead_letters) if topic is not None else None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._batch = asyncio.Lock()  # held while a batch runs: a revocation waits for it
        self._stopping = False
        self._last_batch = float("-inf")
        self._grace = spec.labels.orphan_grace_seconds
        # Labels with no prediction yet, by (partition, offset): (message, first tried).
        self._held: dict[tuple[int, int], tuple[InputMessage, float]] = {}
        self._m_held = joiner.metrics.labels_held.labels(spec.name)
        self._next: dict[int, int] = {}  # per partition: the offset after the last one taken
        self._committed: dict[int, int] = {}  # per partition: the offset last committed
        lifecycle.health.expect_agent(LABELS)

    async def on_start(self) -> None:
        settings = self._settings
        session = settings.kafka_session_timeout_seconds
        consumer = self._kafka.consumer(
            group_id=self.group,
            client_id=self.group,
            enable_auto_commit=False,  # committed after each batch is learned
            auto_offset_reset=settings.consumer_auto_offset_reset,
            partition_assignment_strategy=(SingleOwnerAssignor(),),
            session_timeout_ms=int(session * 1000),
            heartbeat_interval_ms=int(min(3.0, session / 5) * 1000),
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )
        consumer.subscribe([self.topic], listener=self._ownership)
        await self._producer.start()
        await self._kafka.start(consumer)
        self._consumer = consumer
        self._task = asyncio.ensure_future(self._run(consumer))

    async def on_stop(self) -> None:
        """Let a batch in progress finish (within the drain budget), then leave the group."""
        self._stopping = True
        task = self._task
        if task is not None:
            if not self._batch.locked():
                task.cancel()  # waiting for records: nothing to finish
            done, _ = await asyncio.wait({task}, timeout=self._lifecycle.drain_budget())
            if not done:
                task.cancel()
                self._lifecycle.abandoned(f"a {LABELS} batch in progress")
            await asyncio.gather(task, return_exceptions=True)
        if self._skew is not None:
            await self._skew.close(self._lifecycle.drain_budget())
        if self._consumer is not None:
            await self._consumer.stop()
        await self._producer.stop()

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        lifecycle = self._lifecycle
        async with lifecycle.agent(LABELS):
            while not self._stopping:
                records = await self._take(consumer, HELD_RETRY_MS if self._held else IDLE_POLL_MS)
                if not (records or self._held) or self._stopping:
                    continue
                async with self._batch:
                    work = self._handle(consumer, records)
                    await lifecycle.run_batch(LABELS, len(records) + len(self._held), work)

    async def _take(
        self, consumer: AIOKafkaConsumer, wait_ms: int
    ) -> list[ConsumerRecord[Any, Any]]:
        """What has arrived (waiting up to ``wait_ms`` for a first record), plus what
        arrives until ``LEARN_BATCH_INTERVAL_SECONDS`` after the previous batch began; in
        arrival order across partitions (their Kafka timestamps; a partition's own order
        is kept)."""
        fetched = await consumer.getmany(timeout_ms=wait_ms, max_records=LABEL_BATCH_SIZE)
        records = [record for batch in fetched.values() for record in batch]
        if not records:
            return records
        wait = self._last_batch + LEARN_BATCH_INTERVAL_SECONDS - time.monotonic()
        if wait > 0 and len(records) < LABEL_BATCH_SIZE:
            await asyncio.sleep(wait)
            more = await consumer.getmany(timeout_ms=0, max_records=LABEL_BATCH_SIZE - len(records))
            records += [record for batch in more.values() for record in batch]
        self._last_batch = time.monotonic()
        if len({record.partition for record in records}) > 1:
            records.sort(key=lambda record: record.timestamp)  # stable: offsets stay in order
        return records

    async def _handle(
        self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> None:
        now = time.monotonic()
        held, self._held = self._held, {}
        first_tried = {key: tried for key, (_, tried) in held.items()}
        # The held labels first: they arrived before this batch (label order is kept).
        messages = [message for message, _ in held.values()]
        messages += [_input_message(record) for record in records]
        room = HELD_MAX - len(held)

        def hold(message: InputMessage) -> bool:
            nonlocal room
            tried = first_tried.get((message.partition, message.offset), now)
            if now - tried >= self._grace or room <= 0:
                return False
            room -= 1
            return True

        outcome = await self._joiner.join(messages, hold=hold)
        for message in outcome.held:
            key = (message.partition, message.offset)
            self._held[key] = (message, first_tried.get(key, now))
        self._m_held.set(len(self._held))
        await self._dead_letters.publish(outcome.dead_letters)  # delivered before the commit
        if self._skew is not None and outcome.joined:
            self._skew.offer(outcome.joined)  # never waits, never raises
        # Kept for training while the learner works, delivered before the commit too (a
        # replay may write a batch twice; readers keep an event id's first row).
        keeping = asyncio.ensure_future(self._keep_labelled(outcome.joined))
        try:
            if self._learner is not None and outcome.joined:
                try:
                    await self._learner.handle(outcome.joined)
                except LearnerFenced as exc:
                    # Another worker owns the labels now: its rebalance is under way, and
                    # this batch is uncommitted, so the owner takes it (and learns what it
                    # lacks).
                    log.warning("pipeline %s: %s; leaving the batch to it", self.spec.name, exc)
                    return
        finally:
            await keeping
        for record in records:
            after = self._next.get(record.partition, 0)
            self._next[record.partition] = max(after, record.offset + 1)
        oldest_held: dict[int, int] = {}
        for partition, offset in self._held:  # a replay must bring a held label back
            oldest_held[partition] = min(oldest_held.get(partition, offset), offset)
        targets = {p: oldest_held.get(p, after) for p, after in self._next.items()}
        offsets = {
            TopicPartition(self.topic, p): offset
            for p, offset in targets.items()
            if self._committed.get(p) != offset
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self._committed.update(targets)
        except (CommitFailedError, IllegalStateError) as exc:
            # Fenced by the group: the partitions went to another member, which consumes
            # the batch again and finds it learned (the learned ids are checkpointed).
            log.warning(
                "pipeline %s: labels batch learned but its offsets not committed (the"
                " partitions moved to another worker): %s", self.spec.name, exc,
            )  # fmt: skip

    async def _keep_labelled(self, joined: Sequence[dict[str, Any]]) -> None:
        if self._labelled is not None and joined:
            await self._labelled.append(joined)

    def taken_partitions(self, assigned: set[TopicPartition]) -> None:
        """The group gave this worker ``assigned``: a new owner resumes from the checkpoint."""
        # From now on everything comes from the committed offsets again.
        self._held.clear()
        self._m_held.set(0)
        self._next.clear()
        self._committed.clear()
        if self._learner is None:
            return
        if assigned:
            self._learner.forget()
        else:  # another worker owns the labels (or none yet): its figures, not ours
            self._learner.withdraw_figures()

    async def batch_done(self) -> None:
        """Wait for the batch in progress (if any) to finish and commit."""
        async with self._batch:
            pass


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """What a rebalance means here: the owner finishes its batch before it lets go; a new
    owner forgets its state; readiness and the partitions gauge follow the assignment."""

    def __init__(self, consumer: LabelConsumer, gauge: Any, health: Health | None) -> None:
        self._consumer = consumer
        self._gauge = gauge
        self._health = health

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.batch_done()
        self._joined(False, 0)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._consumer.taken_partitions(assigned)
        self._joined(True, len(assigned))

    def _joined(self, joined: bool, partitions: int) -> None:
        if self._health is not None:
            self._gauge.set(partitions)
            self._health.consumer_joined(joined)


def _input_message(record: ConsumerRecord[Any, Any]) -> InputMessage:
    return InputMessage(
        key=record.key,
        value=record.value,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp / 1000.0,  # Kafka's milliseconds -> epoch seconds
    )
