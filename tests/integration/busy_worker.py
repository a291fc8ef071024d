"""A minimal Faust worker on streamscore's transport, for test_delivery.

``python -m tests.integration.busy_worker BOOTSTRAP TOPIC COUNT DATADIR``: reads COUNT
records from TOPIC with ``micro_batches`` while another task keeps the event loop busy (each
of its turns holds the loop 2 ms, as a loaded worker's batch work does), then prints the batch
sizes as one JSON line and stops itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import faust
import orjson

from streams.runtime.lifecycle import Lifecycle
from streams.runtime.transport import StreamscoreApp
from streams.scoring.batching import micro_batches

MAX_SIZE = 64
MAX_WAIT = 0.05
LOOP_TURN_SECONDS = 0.002


def main(bootstrap: str, topic_name: str, count: int, datadir: str) -> None:
    app = StreamscoreApp(
        f"busy-{topic_name}",
        lifecycle=Lifecycle(topic_name, batch_timeout=60.0, shutdown_timeout=15.0),
        fetch_max_wait_ms=10,
        broker=f"kafka://{bootstrap}",
        datadir=datadir,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
    )
    topic = app.topic(topic_name, partitions=1, key_type=bytes, value_type=bytes)
    sizes: list[int] = []

    @app.agent(topic)
    async def read(stream: faust.StreamT[bytes]) -> None:
        async for events in micro_batches(stream, MAX_SIZE, MAX_WAIT):
            sizes.append(len(events))
            for event in events:
                await stream.ack(event)
            if sum(sizes) >= count:
                print(orjson.dumps(sizes).decode(), flush=True)
                os.kill(os.getpid(), signal.SIGTERM)  # Faust's own graceful stop

    @app.task
    async def keep_the_loop_busy() -> None:
        while True:
            time.sleep(LOOP_TURN_SECONDS)  # blocks the loop, like CPU work would
            await asyncio.sleep(0)

    worker = faust.Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
