"""The CLI against real servers: produce sends labels with a progress line, compare says
what it needs when only the servers run, a worker gives up on a silent broker in time.
Each command runs as a user runs it, in a subprocess with a time bound."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson

from streams.runtime.processes import settings_env
from streams.runtime.topics import spec_topics
from streams.settings import Settings
from streams.spec import load_spec
from tests.integration.harness import create_topics, read_to_end

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "streams" / "specs" / "card_fraud.yaml"


def spec_for(tmp_path: Path, unique: str) -> Path:
    """The card-fraud spec on topics and a pipeline name of this test's own."""
    text = SPEC.read_text().replace(
        "repo: ../../features/card_fraud", f"repo: {SPEC.parents[2]}/features/card_fraud"
    )
    for name in ("transactions-dlq", "transaction-labels", "fraud-predictions"):
        text = text.replace(f"topic: {name}", f"topic: {name}-{unique}")
    text = text.replace("topic: transactions\n", f"topic: transactions-{unique}\n")
    text = text.replace("name: card_fraud\n", f"name: card_fraud_{unique}\n", 1)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def run(settings: Settings, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**env, **settings_env(settings)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_produce_sends_a_share_of_labels_after_their_delay(
    base_settings: Settings, tmp_path: Path, unique: str
) -> None:
    spec = spec_for(tmp_path, unique)
    done = run(
        base_settings, "produce", "--spec", str(spec), "--rate", "400", "--count", "400",
        "--labels-delay", "0.2", "--labels-share", "0.5", "--bad-rate", "0.05",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("produce: ")]
    assert progress, done.stderr
    assert "400 events" in progress[-1] and "labels sent" in progress[-1]
    pipeline = load_spec(spec)
    assert pipeline.labels is not None
    topics = {
        name: n
        for name, n in spec_topics(pipeline).items()
        if name in (pipeline.input.topic, pipeline.labels.topic)
    }
    records = asyncio.run(read_to_end(base_settings.kafka_bootstrap_servers, topics))
    events = records[f"transactions-{unique}"]
    labels = [orjson.loads(r.value) for r in records[f"transaction-labels-{unique}"]]
    assert len(events) == 400
    assert 120 <= len(labels) <= 260  # about half of the ~380 valid events
    assert f"{len(labels)} labels" in done.stderr.splitlines()[-1]
    event_ids = {r.key.decode() for r in events}
    assert {label["event_id"] for label in labels} <= event_ids
    assert {label["label"] for label in labels} <= {0, 1}


def test_labels_need_a_labels_topic(base_settings: Settings, tmp_path: Path) -> None:
    eta = ROOT / "tests" / "specs" / "eta" / "spec.yaml"
    done = run(base_settings, "produce", "--spec", str(eta), "--count", "1", "--labels-delay", "1")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line == (
        "error: --labels-delay: pipeline 'delivery-eta' declares no 'labels' topic to send them to"
    )


def test_compare_with_no_worker_says_what_must_run(
    base_settings: Settings, tmp_path: Path, unique: str
) -> None:
    spec = spec_for(tmp_path, unique)
    before = run(base_settings, "compare", "--spec", str(spec))  # no worker ever ran
    assert before.returncode == 1
    (line,) = before.stderr.strip().splitlines()
    assert f"compare: no topic fraud-predictions-{unique}" in line
    assert "no worker has run this spec there yet" in line
    assert f"streamscore worker --spec {spec}" in line

    asyncio.run(create_topics(base_settings, load_spec(spec)))  # as a worker would
    idle = run(base_settings, "compare", "--spec", str(spec))  # a worker, but no traffic
    assert idle.returncode == 0, idle.stderr
    assert "nothing to compare yet" in idle.stderr
    assert "--labels-delay" in idle.stderr


def test_a_worker_gives_up_on_a_silent_broker_within_the_connect_timeout(
    base_settings: Settings, tmp_path: Path, unique: str
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        settings = base_settings.model_copy(
            update={"kafka_bootstrap_servers": address, "kafka_connect_timeout_seconds": 2.0}
        )
        started = time.monotonic()
        done = run(settings, "worker", "--spec", str(spec_for(tmp_path, unique)), timeout=30)
        elapsed = time.monotonic() - started
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot reach the Kafka broker at {address} (no answer in 2 s)" in lines[0]
    assert elapsed < 20  # was 51 s, silent, with an empty reason
