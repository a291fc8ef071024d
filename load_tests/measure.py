"""What comes out: read a system's output topics as a downstream consumer does.

Every output record is matched to its input by its Kafka key (see traffic.py: the key is the
event id, and the id encodes phase and sequence number). Per phase this gives which inputs
came out (and twice, or on the wrong topic), and per prediction the latency from its
``event_time`` field to the record's Kafka timestamp, its publish time (README, "Topics and
record formats"). The backlog, produced minus output, counts the records read here, on
either broker: it needs the records anyway (latency, losses, duplicates), and Tansu answers
ListOffsets with the base offset of the last record batch + 1, short by the size of that
batch (measured here), so end offsets could not serve on both.
"""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from aiokafka import TopicPartition

from load_tests.traffic import BAD, ID_SPACE, TimeParser
from streams.runtime.connections import KafkaConnection

UNKNOWN_FLAG = b'"entity_found":false'


@dataclass
class Tally:
    """Outputs of one phase (one generator run), by input sequence number."""

    seen: bytearray = field(default_factory=bytearray)
    predictions: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    misrouted: int = 0
    unknown_flagged: int = 0
    latency: array[float] = field(default_factory=lambda: array("d"))  # seconds
    published: array[float] = field(default_factory=lambda: array("d"))  # epoch seconds

    def mark(self, seq: int) -> bool:
        """Record ``seq`` as answered; False if it already was (a duplicate)."""
        if seq >= len(self.seen):
            self.seen.extend(bytes(max(seq + 1 - len(self.seen), 65536)))
        if self.seen[seq]:
            self.duplicates += 1
            return False
        self.seen[seq] = 1
        return True

    @property
    def outputs(self) -> int:
        return self.predictions + self.dead_letters - self.duplicates

    def missing(self, sent: int) -> int:
        """Inputs 0..sent-1 without any output."""
        answered = np.frombuffer(bytes(self.seen[:sent]), dtype=np.uint8)
        return sent - int(answered.sum())

    def latencies(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return np.frombuffer(self.published, np.float64), np.frombuffer(self.latency, np.float64)


class OutputMeter:
    """Consumes a system's output topic (and dead-letter topic) from the beginning.

    ``time_key`` is the JSON key that holds the event time in an output record
    (``b'"event_time":"'`` for predictions; a pass-through copy carries the input's own
    time field). With ``routed``, valid events are expected as predictions and bad ones as
    dead letters (``kinds``: the generator pool's kinds, indexed by ``seq % len(kinds)``).
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        topics: list[str],
        partitions: int,
        *,
        dead_letter_topic: str | None,
        time_key: bytes,
        kinds: str,
        routed: bool,
    ) -> None:
        self.tallies: dict[int, Tally] = {}
        self.foreign = 0  # records whose key is not one of ours
        self._records = 0
        self._topics = topics
        self._dlq = dead_letter_topic
        self._time_key = time_key
        self._kinds = kinds
        self._routed = routed
        self._parse = TimeParser()
        self._partitions = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self._consumer = kafka.consumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Latency comes from record timestamps, not from when they are read here: poll
            # gently, so this observer takes little of the two cores from what it measures.
            # With a large minimum, a fetch is answered after the wait (or 1 MiB), not as soon
            # as one record arrives: a few fetches a second instead of one per produced batch
            # (on Tansu, whose fetch cost grows with the batches stored, measured with aiokafka
            # alone at the tail of 12,000 stored batches: produce p50 1.8 ms -> 0.5 ms).
            fetch_max_wait_ms=200,
            fetch_min_bytes=1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._run(), name="output-meter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def tally(self, phase: int) -> Tally:
        tally = self.tallies.get(phase)
        if tally is None:
            tally = self.tallies[phase] = Tally()
        return tally

    @property
    def output_count(self) -> int:
        """Records read from the output topics so far (they start empty)."""
        return self._records

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=50, max_records=20000)
            for partition, records in batches.items():
                self._take(partition.topic == self._dlq, records)
            if not batches:
                await asyncio.sleep(0)

    def _take(self, dead_letter: bool, records: list[Any]) -> None:
        kinds, n_kinds, routed = self._kinds, len(self._kinds), self._routed
        time_key, skip = self._time_key, len(self._time_key)
        self._records += len(records)
        for record in records:
            try:
                phase, seq = divmod(int(record.key), ID_SPACE)
            except (TypeError, ValueError):
                self.foreign += 1
                continue
            tally = self.tally(phase)
            tally.mark(seq)
            bad = kinds[seq % n_kinds] == BAD
            if dead_letter:
                tally.dead_letters += 1
                tally.misrouted += routed and not bad
                continue
            tally.predictions += 1
            tally.misrouted += routed and bad
            value: bytes = record.value or b""
            at = value.find(time_key)
            if at >= 0:
                end = value.find(b'"', at + skip)
                with contextlib.suppress(ValueError):
                    event_time = self._parse(value[at + skip : end])
                    published = record.timestamp / 1000.0
                    tally.latency.append(published - event_time)
                    tally.published.append(published)
            if routed and UNKNOWN_FLAG in value:
                tally.unknown_flagged += 1
