"""/ready: 200 only when the worker can score; /live: 200 unless it is stuck. Both are served
beside /metrics, from threads that never wait on the event loop."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from streams.metrics import Metrics, serve
from streams.runtime.embedded import free_port
from streams.runtime.health import Health, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def healthy(clock: Clock) -> Health:
    """A scoring worker that has started, joined, loaded its model and reached Redis."""
    health = Health(batch_timeout=120.0, loop_stall=30.0, redis_fresh=5.0, clock=clock)
    health.expect_model()
    health.expect_agent("score")
    health.model_loaded("fraud_gbt v2")
    health.agent_running("score", True)
    health.consumer_joined(True)
    health.loop_turned()
    health.redis_answered()
    return health


def test_a_worker_that_just_started_is_not_ready_and_says_why(clock: Clock) -> None:
    health = Health(batch_timeout=120.0, clock=clock)
    health.expect_model()
    health.expect_agent("score")
    verdict = health.readiness()
    assert not verdict.ok
    assert verdict.reasons == [
        "starting",
        "model not loaded",
        "agents not running: score",
        "consumer group not joined",
        "redis: not checked yet",
    ]
    assert health.liveness().ok  # starting is not stuck


def test_ready_when_everything_is_up(clock: Clock) -> None:
    assert healthy(clock).readiness() == Verdict(True, "ready")


@pytest.mark.parametrize(
    ("break_it", "reason"),
    [
        (
            lambda h, c: h.redis_failed("ConnectionError: refused"),
            "redis: ConnectionError: refused",
        ),
        (lambda h, c: setattr(c, "now", c.now + 6.0), "redis: no PING answered for 6.0 s"),
        (lambda h, c: h.consumer_joined(False), "rebalancing"),
        (lambda h, c: h.agent_running("score", False), "agents not running: score"),
        (lambda h, c: h.stopping("stopping (SIGTERM)"), "stopping (SIGTERM)"),
    ],
)
def test_each_check_makes_the_worker_not_ready(clock: Clock, break_it, reason: str) -> None:
    health = healthy(clock)
    break_it(health, clock)
    verdict = health.readiness()
    assert not verdict.ok and verdict.reasons == [reason]


def test_ready_again_once_redis_answers_again(clock: Clock) -> None:
    health = healthy(clock)
    health.redis_failed("TimeoutError")
    health.redis_answered()
    assert health.readiness().ok


def test_a_learning_worker_needs_no_model(clock: Clock) -> None:
    health = Health(batch_timeout=120.0, clock=clock)
    health.expect_agent("labels")
    health.agent_running("labels", True)
    health.consumer_joined(True)
    health.loop_turned()
    health.redis_answered()
    assert health.readiness().ok


def test_a_loop_that_stopped_turning_is_stuck(clock: Clock) -> None:
    health = healthy(clock)
    clock.now += 29.0
    assert health.liveness().ok
    clock.now += 2.0
    verdict = health.liveness()
    assert not verdict.ok and verdict.reasons == ["event loop has not turned for 31.0 s"]


def test_a_batch_running_past_the_batch_timeout_is_stuck(clock: Clock) -> None:
    health = healthy(clock)
    token = health.batch_started("score")
    clock.now += 100.0
    health.loop_turned()  # the loop turns; the batch does not end (a call that never answers)
    assert health.liveness().ok  # e.g. waiting out a Redis outage within the retry budget
    clock.now += 21.0
    health.loop_turned()
    verdict = health.liveness()
    assert verdict == Verdict(
        False, "stuck", ["a score batch has run for 121.0 s (batch_timeout_seconds=120)"]
    )
    health.batch_finished(token)
    assert health.liveness().ok


@pytest.fixture
def served(clock: Clock) -> Iterator[tuple[int, Health, Metrics]]:
    health = healthy(clock)
    metrics = Metrics()
    port = free_port()
    probes = {
        "/ready": lambda: (health.readiness().ok, health.readiness().body()),
        "/live": lambda: (health.liveness().ok, health.liveness().body()),
    }
    server = serve(metrics, "127.0.0.1", port, probes)
    yield port, health, metrics
    server.shutdown()
    server.server_close()


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def test_probes_and_metrics_share_the_metrics_port(served) -> None:
    port, health, metrics = served
    metrics.events.labels("unit").inc(3)
    assert get(port, "/ready") == (200, "application/json", '{"status":"ready"}')
    assert get(port, "/live") == (200, "application/json", '{"status":"alive"}')
    status, _, text = get(port, "/metrics")
    assert status == 200 and 'streamscore_events_total{pipeline="unit"} 3.0' in text

    health.redis_failed("ConnectionError: refused")
    status, kind, body = get(port, "/ready")
    assert (status, kind) == (503, "application/json")
    assert json.loads(body) == {
        "status": "not ready",
        "reasons": ["redis: ConnectionError: refused"],
    }
