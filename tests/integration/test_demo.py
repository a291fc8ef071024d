"""``streamscore demo`` as a user runs it: it flows, Ctrl-C stops it cleanly, and nothing
it started is left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from streams.runtime.processes import settings_env
from tests.integration.harness import PreparedPipeline

pytestmark = pytest.mark.integration

SERVER_NAMES = {"kafka": ("java", "redis-server"), "tansu": ("tansu", "redis-server")}


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.tansu
@pytest.mark.parametrize("demo_broker", ["session", "tansu"])
def test_demo_flows_and_ctrl_c_stops_everything(
    card_fraud: PreparedPipeline, broker_kind: str, demo_broker: str
) -> None:
    """On the session's broker (Apache Kafka where Java allows) and on Tansu, which must keep
    working on a machine with Python alone."""
    if demo_broker == "tansu" and broker_kind == "tansu":
        pytest.skip("the session's broker is Tansu: the first case ran the demo on it")
    kind = broker_kind if demo_broker == "session" else "tansu"
    spec_path, _ = card_fraud.variant(f"demo-{kind}")
    # The prepared pipeline's models and state; the demo starts its own broker and Redis.
    env = {**os.environ, **settings_env(card_fraud.settings), "STREAMSCORE_EMBEDDED_BROKER": kind}
    for name in (
        "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS",
        "STREAMSCORE_REDIS_URL",
        "STREAMSCORE_KAFKA_FETCH_MAX_WAIT_MS",
        "STREAMSCORE_KAFKA_SESSION_TIMEOUT_SECONDS",
    ):
        env.pop(name)
    demo = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "demo", "--spec", str(spec_path), "--rate", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    started: list[psutil.Process] = []
    output: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 180
        for line in demo.stdout:  # piped output: one summary line every 5 s
            output.append(line)
            started = descendants(demo.pid) or started
            flowing = re.search(r"predictions=([1-9]\d*)", line)
            if flowing or time.monotonic() > deadline:
                break
        assert any(p.name().startswith(SERVER_NAMES[kind]) for p in started), "".join(output)
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the tty signals the whole job
        rest, _ = demo.communicate(timeout=90)
        output.append(rest)
    finally:
        if demo.poll() is None:
            demo.kill()
    text = "".join(output)
    assert demo.returncode == 0, text
    assert "unaccounted: 0" in text, text
    assert "worker stopped (exit code 0)" in text, text
    assert ("broker: Apache Kafka" if kind == "kafka" else "broker: Tansu") in text, text
    gone, alive = psutil.wait_procs(started, timeout=5)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
