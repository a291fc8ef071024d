"""Every batch ends or the worker ends; a stop is bounded; /ready and /live tell the truth.

Each test runs a real ``streamscore worker`` against the session's broker and a Redis of
its own, which the test stops, restarts or freezes (SIGSTOP) under the worker. That Redis
starts empty: every entity is unknown and scored with the spec's defaults, which is enough
here (the feature values are checked elsewhere).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.cli.generators import make_generator
from streams.runtime.embedded import EmbeddedRedis, free_port
from streams.runtime.lifecycle import EXIT_BATCH_FAILED, EXIT_DRAIN_INCOMPLETE
from streams.runtime.processes import WorkerProcess
from streams.spec import PipelineSpec
from tests.integration.harness import PreparedPipeline, consume, create_topics, produce

pytestmark = pytest.mark.integration

FAILURE_LINE = re.compile(r"pipeline \S+: stage score failed on a batch of \d+ events, not acked")


@pytest.fixture
def redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis()
    server.start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)  # in case a test left it frozen
    server.stop()


def restart(redis: EmbeddedRedis) -> EmbeddedRedis:
    """A new, empty Redis on the same port (the worker's URL stays valid)."""
    again = EmbeddedRedis(port=redis.port)
    again.start()
    return again


def wait_until(condition: Callable[[], Any], timeout: float, worker: WorkerProcess) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert worker.running, f"the worker exited:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"not met in {timeout}s:\n{worker.log_tail()}"
        time.sleep(0.1)
    return result


def start(
    card_fraud: PreparedPipeline, redis: EmbeddedRedis, name: str, **settings: Any
) -> tuple[WorkerProcess, PipelineSpec]:
    spec_path, spec = card_fraud.variant(name)
    asyncio.run(create_topics(card_fraud.settings, spec))
    worker = WorkerProcess(
        spec_path,
        card_fraud.settings.model_copy(
            update={"redis_url": redis.url, "metrics_port": free_port(), **settings}
        ),
        card_fraud.workdir / f"{spec.name}.log",
    )
    return worker, spec


def status(worker: WorkerProcess, path: str) -> int | None:
    answer = worker.probe(path)
    return None if answer is None else answer[0]


def ready(worker: WorkerProcess) -> bool:
    return status(worker, "/ready") == 200


def send_events(card_fraud: PreparedPipeline, spec: PipelineSpec, n: int, seed: int) -> list[str]:
    generator = make_generator(spec, seed=seed)
    events = [generator.next_event(datetime.now(UTC)) for _ in range(n)]
    messages = [(e["transaction_id"].encode(), orjson.dumps(e)) for e in events]
    asyncio.run(produce(card_fraud.settings.kafka_bootstrap_servers, spec.input.topic, messages))
    return [e["transaction_id"] for e in events]


def predicted_ids(card_fraud: PreparedPipeline, spec: PipelineSpec, ids: list[str]) -> set[str]:
    """Event ids of the predictions, read until there is one for each of ``ids`` (or 60 s)."""
    bootstrap = card_fraud.settings.kafka_bootstrap_servers
    keys = {event_id.encode() for event_id in ids}
    out = asyncio.run(consume(bootstrap, [spec.output.topic], len(ids), 60, keys=keys))
    return {orjson.loads(record.value)["event_id"] for record in out[spec.output.topic]}


def test_ready_follows_redis_and_a_batch_waits_out_an_outage_within_the_retry_budget(
    card_fraud: PreparedPipeline, redis: EmbeddedRedis
) -> None:
    worker, spec = start(
        card_fraud, redis, f"ready-{uuid.uuid4().hex[:8]}", feature_store_retry_seconds=20.0
    )
    try:
        wait_until(lambda: ready(worker), 90, worker)
        assert worker.probe("/live") == (200, {"status": "alive"})

        redis.stop()
        answer = wait_until(lambda: (a := worker.probe("/ready")) and a[0] == 503 and a, 10, worker)
        assert any(r.startswith("redis: ConnectionError") for r in answer[1]["reasons"]), answer
        ids = send_events(card_fraud, spec, 20, seed=1)
        wait_until(lambda: worker.metric("streamscore_events_total") == 20, 20, worker)
        assert status(worker, "/live") == 200  # retrying within the budget is not stuck

        redis = restart(redis)
        assert predicted_ids(card_fraud, spec, ids) == set(ids)
        wait_until(lambda: ready(worker), 10, worker)
        assert worker.running
    finally:
        code = worker.stop()
        redis.stop()
    assert code == 0, worker.log_tail()


def test_redis_down_past_the_retry_budget_stops_the_worker_in_one_line_and_the_batch_is_redone(
    card_fraud: PreparedPipeline, redis: EmbeddedRedis
) -> None:
    name = f"budget-{uuid.uuid4().hex[:8]}"
    worker, spec = start(
        card_fraud, redis, name, feature_store_retry_seconds=2.0, shutdown_timeout_seconds=5.0
    )
    second: WorkerProcess | None = None
    try:
        wait_until(lambda: ready(worker), 90, worker)
        first_ids = send_events(card_fraud, spec, 5, seed=2)
        assert predicted_ids(card_fraud, spec, first_ids) == set(first_ids)

        redis.stop()
        failed_ids = send_events(card_fraud, spec, 10, seed=3)
        sent = time.monotonic()
        # 2 s of retries, then a stop bounded by 5 s; the rest is slack for a busy machine.
        code = worker.process.wait(timeout=30)
        elapsed = time.monotonic() - sent
        log = worker.log_path.read_text()
        assert code == EXIT_BATCH_FAILED, worker.log_tail()
        assert elapsed < 15, f"stopped {elapsed:.1f}s after the events were sent"
        failures = [line for line in log.splitlines() if FAILURE_LINE.search(line)]
        assert len(failures) == 1, log
        # The last read's error, or the budget running out while a read still waited.
        cause = ("FeatureStoreError", "still failing after 2 s of retries")
        assert any(c in failures[0] for c in cause) and "exit status 1" in failures[0]
        assert "wait_empty" not in log and "Crashed reason" not in log, log

        # Nothing of the failed batch was acked: the next worker scores it.
        redis = restart(redis)
        second = WorkerProcess(
            worker.spec_path, worker.settings, card_fraud.workdir / f"{spec.name}-second.log"
        )
        assert predicted_ids(card_fraud, spec, failed_ids) >= set(failed_ids)
    finally:
        worker.stop()
        codes = [second.stop()] if second is not None else []
        redis.stop()
    assert codes == [0]


def test_sigterm_stops_a_worker_stuck_on_a_frozen_redis_within_the_shutdown_timeout(
    card_fraud: PreparedPipeline, redis: EmbeddedRedis
) -> None:
    # A frozen Redis accepts connections and never answers: the feature read hangs (no
    # error to retry on), the batch never ends by itself before its timeout.
    worker, spec = start(
        card_fraud, redis, f"frozen-{uuid.uuid4().hex[:8]}", shutdown_timeout_seconds=6.0
    )
    try:
        wait_until(lambda: ready(worker), 90, worker)
        assert redis.process is not None
        os.kill(redis.process.pid, signal.SIGSTOP)
        send_events(card_fraud, spec, 5, seed=4)
        wait_until(lambda: worker.metric("streamscore_events_total") == 5, 20, worker)
        wait_until(lambda: status(worker, "/ready") == 503, 10, worker)

        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        try:
            code = worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM did not stop the worker in 20 s:\n{worker.log_tail()}")
        elapsed = time.monotonic() - started
    finally:
        worker.stop()
        if redis.process is not None:
            os.kill(redis.process.pid, signal.SIGCONT)
    assert code == EXIT_DRAIN_INCOMPLETE, worker.log_tail()
    assert elapsed < 6.0 + 2.0, f"stopped {elapsed:.1f}s after SIGTERM"
    assert "stopping without waiting longer for" in worker.log_path.read_text()
