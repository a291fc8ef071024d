"""Can this worker score (readiness), and is it stuck (liveness)?

The worker's event loop writes what it knows here (agents running, the consumer group
joined, the model loaded, the last Redis PING, the last loop turn, batches in progress);
the metrics port's HTTP threads read it to answer ``/ready`` and ``/live``
(``streams.metrics.serve``). The answers never wait on the event loop, so a stuck loop is
reported as stuck instead of leaving the probe without an answer.

Values are replaced, never mutated in place (frozensets, dict copies): a reader thread
always sees a whole value.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: How often the loop records a turn and PINGs Redis (``streams.runtime.app.attach_health_checks``).
CHECK_SECONDS = 1.0
#: A Redis PING answered longer ago than this no longer makes the worker ready.
REDIS_FRESH_SECONDS = 5.0
#: An event loop that has not turned for this long is stuck (a blocking call on the loop).
LOOP_STALL_SECONDS = 30.0


@dataclass(frozen=True)
class Verdict:
    """One probe's answer: ``ok`` is HTTP 200, else 503 with the reasons."""

    ok: bool
    status: str
    reasons: list[str] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status}
        if self.reasons:
            body["reasons"] = self.reasons
        return body


class Health:
    """What readiness and liveness are decided from; written on the event loop only."""

    def __init__(
        self,
        batch_timeout: float,
        *,
        loop_stall: float = LOOP_STALL_SECONDS,
        redis_fresh: float = REDIS_FRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batch_timeout = batch_timeout
        self.loop_stall = loop_stall
        self.redis_fresh = redis_fresh
        self.clock = clock
        self._expected_agents: frozenset[str] = frozenset()
        self._running_agents: frozenset[str] = frozenset()
        self._needs_model = False
        self._model: str | None = None
        self._joined = False
        self._joined_once = False
        self._redis_answered_at: float | None = None
        self._redis_error = "not checked yet"
        self._loop_turned_at: float | None = None
        self._batches: dict[int, tuple[str, float]] = {}  # token -> (stage, started)
        self._tokens = itertools.count()
        self._stopping: str | None = None

    # --- written by the worker, on its event loop ------------------------------------------

    def expect_agent(self, stage: str) -> None:
        """The worker runs this agent: it is not ready until the agent runs."""
        self._expected_agents = self._expected_agents | {stage}

    def agent_running(self, stage: str, running: bool) -> None:
        agents = self._running_agents
        self._running_agents = agents | {stage} if running else agents - {stage}

    def expect_model(self) -> None:
        """The worker scores: it is not ready until its primary model is loaded."""
        self._needs_model = True

    def model_loaded(self, description: str) -> None:
        self._model = description

    def consumer_joined(self, joined: bool) -> None:
        """True once the consumer group gave this worker its assignment (possibly empty:
        more workers than partitions); False from a revocation until the next one."""
        self._joined = joined
        self._joined_once = self._joined_once or joined

    def loop_turned(self) -> None:
        self._loop_turned_at = self.clock()

    def redis_answered(self) -> None:
        self._redis_answered_at = self.clock()
        self._redis_error = ""

    def redis_failed(self, error: str) -> None:
        self._redis_error = error

    def batch_started(self, stage: str) -> int:
        token = next(self._tokens)
        self._batches = {**self._batches, token: (stage, self.clock())}
        return token

    def batch_finished(self, token: int) -> None:
        batches = dict(self._batches)
        batches.pop(token, None)
        self._batches = batches

    def stopping(self, reason: str) -> None:
        self._stopping = reason

    # --- read by the HTTP threads ---------------------------------------------------------

    def readiness(self) -> Verdict:
        """Ready when it can score: running, joined, Redis answering, model and agents up."""
        now = self.clock()
        reasons = []
        if self._stopping is not None:
            reasons.append(self._stopping)
        if self._loop_turned_at is None:
            reasons.append("starting")
        if self._needs_model and self._model is None:
            reasons.append("model not loaded")
        missing = sorted(self._expected_agents - self._running_agents)
        if missing:
            reasons.append(f"agents not running: {', '.join(missing)}")
        if not self._joined:
            reasons.append("rebalancing" if self._joined_once else "consumer group not joined")
        answered, error = self._redis_answered_at, self._redis_error
        if error:  # the last PING failed (or none was sent yet)
            reasons.append(f"redis: {error}")
        elif answered is not None and now - answered > self.redis_fresh:
            reasons.append(f"redis: no PING answered for {now - answered:.1f} s")
        return Verdict(not reasons, "not ready" if reasons else "ready", reasons)

    def liveness(self) -> Verdict:
        """Alive unless stuck: the loop not turning, or a batch past ``batch_timeout``
        (the worker fails such a batch itself while its loop turns)."""
        now = self.clock()
        reasons = []
        turned = self._loop_turned_at
        if turned is not None and now - turned > self.loop_stall:
            reasons.append(f"event loop has not turned for {now - turned:.1f} s")
        for stage, started in self._batches.values():
            if now - started > self.batch_timeout:
                reasons.append(
                    f"a {stage} batch has run for {now - started:.1f} s"
                    f" (batch_timeout_seconds={self.batch_timeout:g})"
                )
                break
        return Verdict(not reasons, "stuck" if reasons else "alive", reasons)
