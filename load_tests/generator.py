"""The load generator, a process of its own: offers events (and delayed labels) to Kafka.

    python -m load_tests.generator --bootstrap HOST:PORT --spec SPEC [--seed N] ...

It takes commands as JSON lines on stdin and reports JSON lines on stdout, so the run
(load_tests/run.py) drives it phase by phase while measuring in its own process:

    {"cmd": "phase", "phase": 3, "topic": ..., "partitions": 4, "pattern": {...},
     "duration": 8.0, "labels_topic": ... | null, "labels_partitions": 4,
     "label_delay": 2.0, "label_fraction": 1.0}
    {"cmd": "stop_phase"}            end the running phase now (the step is clearly lost)
    {"cmd": "quit"}

    {"type": "ready", "kinds": "vvbv..."}         the pool's kinds, indexed by seq % len
    {"type": "progress", "phase": 3, "wall": ..., "sent": ..., "acked": ..., "lag": ...}
    {"type": "done", "phase": 3, "sent": ..., "acked": ..., "failed": ..., ...}
    {"type": "bye", "labels_sent": ..., "labels_pending": ...}

Events are sent with aiokafka's batch API without awaiting deliveries: every tick (10 ms, as
the demo producer) the events whose arrival time has come are rendered from the pool, stamped with
the current time as event time, grouped by partition and handed over as one batch per
partition. The event time is the moment the event leaves the generator, so latency measured
from it is the system's, not the generator's; how late the generator was against its
schedule is reported separately (``lag``). Labels ``{"event_id", "label", "label_time"}``
follow their event after ``label_delay`` seconds on the labels topic.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from load_tests.traffic import (
    BAD,
    IsoFormatter,
    Mix,
    Pattern,
    Template,
    arrivals,
    build_pool,
    event_id,
    label_record,
)
from streams.runtime.connections import KafkaConnection
from streams.spec import load_spec

TICK_SECONDS = 0.01  # the 10 ms slices of streams/cli/producer.py
PROGRESS_SECONDS = 0.1
MAX_BATCH_BYTES = 512 * 1024


@dataclass
class PhaseRun:
    phase: int
    topic: str
    partitions: int
    offsets: Any  # sorted arrival offsets, seconds
    labels_topic: str | None
    labels_partitions: int
    label_delay: float
    label_fraction: float
    start: float = field(default_factory=time.monotonic)
    next: int = 0
    sent: int = 0
    acked: int = 0
    failed: int = 0
    labels: int = 0
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    lags: list[float] = field(default_factory=list)
    deliveries: list[asyncio.Future[Any]] = field(default_factory=list)
    stop: bool = False


class Generator:
    def __init__(self, producer: AIOKafkaProducer, pool: list[Template], id_quoted: bool):
        self.producer = producer
        self.pool = pool
        self.id_quoted = id_quoted
        self.run: PhaseRun | None = None
        self.quit = False
        self.iso = IsoFormatter()
        self.random = random.Random(7)
        # (due monotonic, topic, partition, key, value) in due order (the delay is constant)
        self.labels: collections.deque[tuple[float, str, int, bytes, bytes]] = collections.deque()
        self.labels_sent = 0
        self._reported = 0.0

    def start_phase(self, command: dict[str, Any]) -> None:
        pattern = Pattern(**command["pattern"])
        self.run = PhaseRun(
            phase=int(command["phase"]),
            topic=command["topic"],
            partitions=int(command["partitions"]),
            offsets=arrivals(pattern, float(command["duration"]), seed=int(command["phase"])),
            labels_topic=command.get("labels_topic"),
            labels_partitions=int(command.get("labels_partitions") or 1),
            label_delay=float(command.get("label_delay") or 0.0),
            label_fraction=float(command.get("label_fraction") or 0.0),
        )

    async def pump(self) -> None:
        while not self.quit:
            run = self.run
            if run is not None:
                await self._send_due(run)
                if run.stop or run.next >= len(run.offsets):
                    await self._finish(run)
            await self._send_labels()
            now = time.monotonic()
            if run is not None and now - self._reported >= PROGRESS_SECONDS:
                self._reported = now
                emit(
                    type="progress",
                    phase=run.phase,
                    wall=time.time(),
                    sent=run.sent,
                    acked=run.acked,
                    failed=run.failed,
                    lag=run.lags[-1] if run.lags else 0.0,
                )
            await asyncio.sleep(TICK_SECONDS)

    async def _send_due(self, run: PhaseRun) -> None:
        elapsed = time.monotonic() - run.start
        due = int(np.searchsorted(run.offsets, elapsed, side="right"))
        if due <= run.next:
            return
        run.lags.append(elapsed - float(run.offsets[run.next]))
        first, run.next = run.next, due
        pool, size = self.pool, len(self.pool)
        base = event_id(run.phase, 0)
        for partition in range(run.partitions):
            start = first + (partition - first) % run.partitions
            seqs = range(start, due, run.partitions)
            if not seqs:
                continue
            now = time.time()
            stamp, stamp_ms = self.iso(now), int(now * 1000)
            batch = self.producer.create_batch()
            count = 0
            for seq in seqs:
                template = pool[seq % size]
                key = b"%d" % (base + seq)
                value = template.render(key, stamp)
                if batch.append(key=key, value=value, timestamp=stamp_ms) is None:
                    await self._send_batch(run, batch, run.topic, partition, count)
                    batch, count = self.producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=stamp_ms)
                count += 1
                run.kinds[template.kind] += 1
                if run.labels_topic and template.kind != BAD:
                    self._queue_label(run, key, template, now)
            await self._send_batch(run, batch, run.topic, partition, count)

    def _queue_label(self, run: PhaseRun, key: bytes, template: Template, now: float) -> None:
        if run.label_fraction < 1.0 and self.random.random() >= run.label_fraction:
            return
        assert run.labels_topic is not None
        value = label_record(key, template.label, self.iso(now + run.label_delay), self.id_quoted)
        due = time.monotonic() + run.label_delay
        partition = int(key) % run.labels_partitions
        self.labels.append((due, run.labels_topic, partition, key, value))
        run.labels += 1

    async def _send_batch(self, run: PhaseRun, batch: Any, topic: str, part: int, n: int) -> None:
        if n == 0:
            return
        batch.close()
        delivery = await self.producer.send_batch(batch, topic, partition=part)
        run.sent += n

        def delivered(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                run.failed += n
            else:
                run.acked += n

        delivery.add_done_callback(delivered)
        run.deliveries.append(delivery)

    async def _send_labels(self) -> None:
        now = time.monotonic()
        grouped: dict[tuple[str, int], list[tuple[bytes, bytes]]] = collections.defaultdict(list)
        while self.labels and self.labels[0][0] <= now:
            _, topic, partition, key, value = self.labels.popleft()
            grouped[topic, partition].append((key, value))
        stamp_ms = int(time.time() * 1000)
        for (topic, partition), records in grouped.items():
            batch = self.producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=stamp_ms) is None:
                    batch.close()
                    await self.producer.send_batch(batch, topic, partition=partition)
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=stamp_ms)
            batch.close()
            await self.producer.send_batch(batch, topic, partition=partition)
            self.labels_sent += len(records)

    async def _finish(self, run: PhaseRun) -> None:
        self.run = None
        await asyncio.gather(*run.deliveries, return_exceptions=True)
        lags = np.asarray(run.lags or [0.0])
        emit(
            type="done",
            phase=run.phase,
            wall=time.time(),
            duration=time.monotonic() - run.start,
            stopped_early=run.stop,
            planned=len(run.offsets),
            sent=run.sent,
            acked=run.acked,
            failed=run.failed,
            kinds=dict(run.kinds),
            labels=run.labels,
            lag_p50=float(np.percentile(lags, 50)),
            lag_p99=float(np.percentile(lags, 99)),
            lag_max=float(lags.max()),
        )


def emit(**message: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


def _read_commands(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        if line.strip():
            loop.call_soon_threadsafe(queue.put_nowait, orjson.loads(line))
    loop.call_soon_threadsafe(queue.put_nowait, {"cmd": "quit"})  # the parent went away


async def main(args: argparse.Namespace) -> None:
    spec = load_spec(args.spec)
    pool = build_pool(spec, Mix(bad=args.bad, unknown=args.unknown), args.pool_size, args.seed)
    id_quoted = spec.event.fields[spec.event.id_field].type != "int"
    # The load tester runs on the embedded broker it starts, which listens in PLAINTEXT.
    producer = KafkaConnection(args.bootstrap).producer(linger_ms=0, max_batch_size=MAX_BATCH_BYTES)
    await producer.start()
    generator = Generator(producer, pool, id_quoted)
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGTERM, commands.put_nowait, {"cmd": "quit"})
    threading.Thread(target=_read_commands, args=(loop, commands), daemon=True).start()
    pump = asyncio.create_task(generator.pump(), name="pump")
    emit(type="ready", kinds="".join(t.kind for t in pool))
    try:
        while True:
            command = await commands.get()
            if command["cmd"] == "phase":
                generator.start_phase(command)
            elif command["cmd"] == "stop_phase" and generator.run is not None:
                generator.run.stop = True
            elif command["cmd"] == "quit":
                break
    finally:
        generator.quit = True
        with contextlib.suppress(Exception):
            await pump
        await producer.stop()
        emit(type="bye", labels_sent=generator.labels_sent, labels_pending=len(generator.labels))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m load_tests.generator")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=8192)
    parser.add_argument("--bad", type=float, default=0.01, help="share of invalid events")
    parser.add_argument("--unknown", type=float, default=0.01, help="share of unknown entities")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
