"""The embedded Apache Kafka broker's lifecycle: it comes up answering metadata, creates no
topic implicitly, and leaves nothing behind, also when its parent is killed."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap

import psutil
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.runtime.apache_kafka import ApacheKafka, check_java
from streams.settings import Settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not check_java(Settings().cache_dir).usable,
        reason=f"Apache Kafka cannot run here: {check_java(Settings().cache_dir).why_not}",
    ),
]


async def _send(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"x"), 5)
    finally:
        await producer.stop()


def test_starts_answers_creates_nothing_implicitly_and_stops() -> None:
    broker = ApacheKafka(Settings().cache_dir)
    with broker:
        assert broker.running
        workdir = broker.workdir
        assert workdir is not None
        assert (workdir / "data" / "meta.properties").exists()  # formatted as KRaft
        with pytest.raises((KafkaError, TimeoutError)):
            asyncio.run(_send(broker.bootstrap_servers, "nobody-created-this"))
        pid = broker.process.pid if broker.process else -1
    assert not broker.running
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not workdir.exists()


def test_dies_with_its_parent(tmp_path) -> None:
    """A parent killed with SIGKILL (no cleanup runs) still takes the broker with it."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from streams.runtime.apache_kafka import ApacheKafka
        broker = ApacheKafka(Path({str(Settings().cache_dir)!r}))
        broker.start()
        print(broker.process.pid, broker.workdir, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid, workdir = parent.stdout.readline().split()
        java = psutil.Process(int(pid))
        assert java.is_running()
    finally:
        parent.kill()
        parent.wait()
    gone, alive = psutil.wait_procs([java], timeout=20)
    shutil.rmtree(workdir, ignore_errors=True)  # no cleanup ran in the killed parent
    assert not alive, "the broker outlived its parent"
