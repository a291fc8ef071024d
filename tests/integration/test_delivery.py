"""The consumer hands a whole fetch to the streams at once (streams/runtime/transport.py), so a busy
event loop does not throttle how fast records reach the agent's batches."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration import busy_worker

pytestmark = pytest.mark.integration

RECORDS = 2000


async def _backlog(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(RECORDS):
            if batch.append(key=None, value=b"%d" % i, timestamp=None) is None:
                batch.close()
                await (await producer.send_batch(batch, topic, partition=0))
                batch = producer.create_batch()
                batch.append(key=None, value=b"%d" % i, timestamp=None)
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


def test_a_backlog_fills_whole_batches_while_the_loop_is_busy(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """With Faust's per-record hand-over (about two loop turns a record), a loop whose turns
    take 2 ms delivered ~12 records per 50 ms batch window; a fetch handed over at once
    fills every batch to its maximum."""
    topic = f"busy-{unique}"
    asyncio.run(_backlog(kafka_bootstrap, topic))
    command = [sys.executable, "-m", "tests.integration.busy_worker"]
    command += [kafka_bootstrap, topic, str(RECORDS), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert lines, f"the worker printed no batch sizes (exit {done.returncode}):\n{done.stderr}"
    sizes = orjson.loads(lines[-1])
    assert sum(sizes) == RECORDS
    assert statistics.median(sizes) == busy_worker.MAX_SIZE, sizes
    # It stopped itself (SIGTERM): Faust stops an agent by throwing StopAsyncIteration into
    # its channel, which must end the batches, not crash the agent.
    assert done.returncode == 0 and "Crashed" not in done.stderr, done.stderr[-3000:]
