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

from streams.processes import settings_env
from tests.integration.harness import PreparedPipeline

pytestmark = pytest.mark.integration

SERVER_NAMES = ("tansu", "redis-server")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_demo_flows_and_ctrl_c_stops_everything(card_fraud: PreparedPipeline) -> None:
    spec_path, _ = card_fraud.variant("demo")
    # The prepared pipeline's models and state; the demo starts its own broker and Redis.
    env = {**os.environ, **settings_env(card_fraud.settings)}
    for name in ("STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS", "STREAMSCORE_REDIS_URL"):
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
        assert any(p.name().startswith(SERVER_NAMES) for p in started), "".join(output)
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
    gone, alive = psutil.wait_procs(started, timeout=5)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
