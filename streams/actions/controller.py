"""``streamscore controller``: a pipeline's retrain triggers and automatic promotion, in a
loop of its own.

Every ``STREAMSCORE_CONTROLLER_INTERVAL_SECONDS`` (a *tick*) the controller:

1. holds the pipeline's lease (``streams.actions.lease``), or waits: one acts per pipeline;
2. collects a finished retrain: ``retrain_finished`` (the new challenger and its lineage) or
   ``retrain_failed`` (the job's last error line);
3. checks ``actions.retrain``'s triggers (``streams.actions.triggers``) on what the service
   already keeps: the learner's label count and rolling evaluation in Redis, and the drift
   records of the monitoring topic; when one holds, no retrain runs and
   ``min_interval_seconds`` have passed since the last one started, it starts
   ``train --from-stream`` in a child process (``streams.actions.retrain_job``) and records
   ``retrain_started`` with the reasons;
4. with ``actions.promote.auto``, decides on the challenger against the champion with the
   one decision (``decide_promotion``) on the learner's evidence, when that evidence
   changed; a yes moves ``champion`` by compare-and-set, as ``models promote`` does, and is
   recorded with its evidence; a no is recorded once per candidate version and evidence
   size (a bucket: under ``min_labels``, then each doubling), not every tick;
5. logs one summary line.

Nothing blocks the loop for long: Redis calls have socket timeouts, Kafka calls
``kafka_connect_timeout_seconds``, the retrain runs in a child, the decision in a thread,
and a tick as a whole is cut at ``TICK_BUDGET_SECONDS``. A tick that fails (a server away)
is logged and the next one tries again; records not yet published are kept and published
first next time. SIGTERM/SIGINT stop the loop at once: a running retrain is stopped
(``retrain_failed``), the lease released.

Its memory (the labels counted and the time at the last retrain's start) is in Redis
(``Keys.controller_state``), so a restarted controller, or the one taking over, goes on
from there. The refusals already recorded are not: after a restart a refusal may be
recorded once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError

from models.errors import ModelRefused, RegistryError
from models.evaluation import EvaluationStateError, RollingEvaluation
from models.fitness import Layout, load_checked
from models.registry import CHALLENGER, CHAMPION, ModelRegistry
from streams.actions.decision import Decision, decide_promotion
from streams.actions.drift_follow import MonitoringFollower
from streams.actions.evidence import paired, parse_evidence, parse_inference
from streams.actions.lease import Lease
from streams.actions.record import CONTROLLER, Action, action_record, publish_actions
from streams.actions.retrain_job import RetrainJob, RetrainOutcome
from streams.actions.triggers import DriftStreak, floor_reason, interval_left, labels_reason
from streams.errors import StreamscoreError
from streams.runtime.connections import KafkaConnection, RedisConnection
from streams.scoring.canary import arm
from streams.scoring.prediction_store import Keys
from streams.scoring.records import iso_utc
from streams.settings import Settings
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)

STAGE = "controller"
#: Longest one tick may take, whatever is slow; the next tick tries again.
TICK_BUDGET_SECONDS = 60.0
#: Redis socket timeouts: a Redis that does not answer costs a tick this, not a hang.
REDIS_TIMEOUT_SECONDS = 5.0


def evidence_bucket(n: int, min_labels: int) -> int:
    """Refusals are recorded once per candidate and bucket of paired labels: 0 under
    ``min_labels``, then 1, 2, 3... at each doubling (so a few records, not one a tick).

    >>> [evidence_bucket(n, 100) for n in (1, 99, 100, 199, 200, 400, 10_000)]
    [0, 0, 1, 1, 2, 3, 7]
    """
    if n < min_labels:
        return 0
    return 1 + int(math.log2(n / min_labels))


@dataclass
class Tick:
    """What one tick saw and did: the summary line."""

    leader: bool = True
    labels_since: int | None = None
    drift_streak: int | None = None
    retrain: str = "off"
    champion: int | None = None
    challenger: int | None = None
    evidence: int = 0
    decision: str = "-"

    def line(self, pipeline: str) -> str:
        if not self.leader:
            return f"{STAGE} {pipeline}: standby (another controller holds the lease)"
        parts: list[str] = []
        if self.labels_since is not None:
            parts.append(f"labels since retrain {self.labels_since}")
        if self.drift_streak is not None:
            parts.append(f"drift streak {self.drift_streak}")
        parts.append(f"retrain {self.retrain}")
        parts.append(f"champion v{_v(self.champion)} challenger v{_v(self.challenger)}")
        parts.append(f"evidence n={self.evidence}")
        parts.append(f"decision {self.decision}")
        return f"{STAGE} {pipeline}: " + " | ".join(parts)


def _v(version: int | None) -> str:
    return "-" if version is None else str(version)


class Controller:
    def __init__(
        self,
        spec: PipelineSpec,
        spec_path: Path,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self._spec_path = spec_path.resolve()
        self._settings = settings
        self._clock = clock
        self.keys = Keys(spec.name)
        self._redis: aioredis.Redis = RedisConnection.from_settings(settings).async_client(
            socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self._kafka = KafkaConnection.from_settings(settings)
        self._registry = ModelRegistry(settings.model_dir)
        self.interval = settings.controller_interval_seconds
        ttl = max(3 * self.interval, 15.0)  # a few missed renewals before another takes over
        self._lease = Lease(self._redis, self.keys.controller_lease, ttl)
        retrain = spec.actions.retrain
        drift = retrain.on_drift
        self._streak = DriftStreak(spec.model.name, drift.windows) if drift else None
        self._follower = MonitoringFollower(self._kafka, spec.monitoring_topic) if drift else None
        self._job: RetrainJob | None = None
        self._job_from: int | None = None  # the challenger before the running retrain
        self._outbox: list[dict[str, Any]] = []  # records not yet on the topic, in order
        self._refused: set[tuple[int, int, int]] = set()  # (champion, candidate, bucket)
        self._decided: tuple[Any, ...] | None = None  # what the last decision was made on
        self._decision: Decision | None = None
        self._was_leader: bool | None = None

    # -- the loop --

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; then stop at once (a tick under way is cancelled)."""
        try:
            while not stop.is_set():
                await self._tick_or_stop(stop)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await self.close()

    async def _tick_or_stop(self, stop: asyncio.Event) -> None:
        tick = asyncio.ensure_future(self.tick())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {tick, stopping}, timeout=TICK_BUDGET_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
        if tick not in done:
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await tick
            if not stop.is_set():
                log.warning("%s %s: a tick took over %g s; next one", STAGE, self.spec.name,
                            TICK_BUDGET_SECONDS)  # fmt: skip
            return
        try:
            summary = tick.result()
        except (StreamscoreError, KafkaError, OSError, TimeoutError, aioredis.RedisError) as exc:
            log.warning("%s %s: tick failed, next in %g s: %r", STAGE, self.spec.name,
                        self.interval, exc)  # fmt: skip
            return
        if summary.leader or self._was_leader is not False:
            log.info("%s", summary.line(self.spec.name))
        self._was_leader = summary.leader

    async def close(self) -> None:
        """Stop a running retrain (recorded as failed), publish what is pending (bounded),
        release the lease, close the clients."""
        if self._job is not None:
            job, self._job = self._job, None
            await asyncio.to_thread(job.stop)
            reason = "train --from-stream: stopped with the controller"
            self._record("retrain_failed", CHALLENGER, self._job_from, None, reasons=[reason])
        with contextlib.suppress(Exception):
            await self._flush()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                await self._lease.release()
        if self._follower is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                    await self._follower.close()
        await self._redis.aclose()

    # -- one tick --

    async def tick(self) -> Tick:
        summary = Tick()
        if not await self._lease.hold():
            summary.leader = False
            return summary
        await self._flush()
        if self.spec.actions.retrain.enabled:
            await self._retrain(summary)
        if self.spec.actions.promote.auto:
            await self._promote(summary)
        await self._flush()
        return summary

    async def _retrain(self, summary: Tick) -> None:
        spec = self.spec.actions.retrain
        now = self._clock()
        labels = int(await self._redis.get(self.keys.labels_consumed) or 0)
        # Labels are counted from the controller's first run, not from the pipeline's start.
        await self._redis.hsetnx(self.keys.controller_state, "labels_at_retrain", str(labels))  # type: ignore[misc]
        state = await self._redis.hgetall(self.keys.controller_state)  # type: ignore[misc]
        at_retrain = int(state.get(b"labels_at_retrain", labels))
        started = state.get(b"retrain_started_at")
        last_start = float(started) if started is not None else None
        summary.labels_since = labels - at_retrain
        if self._streak is not None and self._follower is not None:
            budget = self._settings.kafka_connect_timeout_seconds
            for record in await self._follower.read_new(budget):
                self._streak.add(record, since=last_start)
            summary.drift_streak = self._streak.count

        if self._job is not None:
            outcome = await asyncio.to_thread(self._job.poll)
            if outcome is None:
                summary.retrain = f"running {time.monotonic() - self._job.started:.0f} s"
                return
            self._job = None
            self._finished(outcome)
            summary.retrain = f"finished v{outcome.version}" if outcome.ok else "failed"
            return

        reasons = [
            r
            for r in (
                labels_reason(spec, labels=labels, at_retrain=at_retrain),
                self._streak.reason() if self._streak is not None else None,
                floor_reason(spec.metric_floor, await self._served_metrics()),
            )
            if r is not None
        ]
        if not reasons:
            summary.retrain = "idle"
            return
        left = interval_left(spec, last_start=last_start, now=now)
        if left > 0:
            summary.retrain = f"due, waits {left:.0f} s (min_interval_seconds)"
            return
        since = now - spec.window_seconds if spec.window_seconds is not None else None
        self._job_from = self._registry.aliases(self.spec.model.name).get(CHALLENGER)
        self._job = RetrainJob(
            self.spec, self._spec_path, self._settings, since=since,
            timeout=self._settings.controller_retrain_timeout_seconds,
        )  # fmt: skip
        mapping = {"labels_at_retrain": labels, "retrain_started_at": now}
        await self._redis.hset(self.keys.controller_state, mapping=mapping)  # type: ignore[misc]
        if self._streak is not None:
            self._streak.reset()
        details = {"labels": labels, "since": None if since is None else iso_utc(since)}
        self._record(
            "retrain_started", CHALLENGER, self._job_from, None, reasons=reasons, details=details
        )
        summary.retrain = "started"
        summary.labels_since = 0

    async def _served_metrics(self) -> dict[str, float] | None:
        """The primary's rolling evaluation (served scores) from the learner's checkpoint."""
        if self.spec.actions.retrain.metric_floor is None:
            return None
        data = await self._redis.get(self.keys.evaluation)
        if data is None:
            return None
        try:
            snapshot = RollingEvaluation.from_bytes(data, self.spec.task).snapshot()
        except EvaluationStateError as exc:
            log.warning("%s %s: the learner's evaluation: %s", STAGE, self.spec.name, exc)
            return None
        return snapshot.get(self.spec.model.name)

    def _finished(self, outcome: RetrainOutcome) -> None:
        took = {"seconds": round(outcome.seconds, 1)}
        if outcome.ok:
            details = {**took, "lineage": outcome.lineage}
            self._record(
                "retrain_finished", CHALLENGER, self._job_from, outcome.version, details=details
            )
            log.info("%s %s: retrained: challenger v%s (%s rows) in %.0f s", STAGE,
                     self.spec.name, outcome.version, (outcome.lineage or {}).get("rows"),
                     outcome.seconds)  # fmt: skip
        else:
            self._record(
                "retrain_failed", CHALLENGER, self._job_from, None, reasons=[outcome.reason],
                details=took,
            )  # fmt: skip
            log.warning("%s %s: retrain failed: %s", STAGE, self.spec.name, outcome.reason)

    async def _promote(self, summary: Tick) -> None:
        name = self.spec.model.name
        aliases = self._registry.aliases(name)
        champion, candidate = aliases.get(CHAMPION), aliases.get(CHALLENGER)
        summary.champion, summary.challenger = champion, candidate
        if champion is None or candidate is None or candidate == champion:
            summary.decision = "no challenger"
            return
        raw = await self._redis.lrange(self.keys.evidence, 0, -1)  # type: ignore[misc]
        events = parse_evidence(raw)
        arms = arm(name, champion), arm(name, candidate)
        summary.evidence = n = len(paired(events, *arms).labels)
        if n == 0:
            summary.decision = "waiting for evidence"
            return
        seen = (champion, candidate, len(events), events[-1].event_id)
        if seen != self._decided or self._decision is None:
            inference = parse_inference(await self._redis.hgetall(self.keys.inference))  # type: ignore[misc]
            threshold = self.spec.model.decision_threshold
            self._decision = await asyncio.to_thread(
                decide_promotion, events, inference, champion=arms[0], candidate=arms[1],
                policy=self.spec.actions.promote, task=self.spec.task, threshold=threshold,
            )  # fmt: skip
            self._decided = seen
        decision = self._decision
        if decision.promote:
            summary.decision = await self._promoted(decision, champion, candidate)
            return
        summary.decision = f"refuse ({decision.reasons[0]})"
        self._refuse(champion, candidate, n, decision.evidence(), list(decision.reasons))

    async def _promoted(self, decision: Decision, champion: int, candidate: int) -> str:
        name = self.spec.model.name
        evidence = decision.evidence()
        try:
            await asyncio.to_thread(
                load_checked, self._registry, name, candidate, [Layout.of(self.spec)]
            )
            self._registry.set_alias(name, CHAMPION, candidate, expected=champion)
        except (RegistryError, ModelRefused) as exc:  # a model refused, the alias moved
            reasons = [f"{type(exc).__name__}: {exc}"]
            self._refuse(champion, candidate, evidence["labels"], evidence, reasons)
            return f"not promoted ({exc})"
        self._record("promotion", CHAMPION, champion, candidate, evidence=evidence)
        self._decision = None
        log.info("%s %s: promoted %s v%s over v%s on %s labels", STAGE, self.spec.name, name,
                 candidate, champion, evidence["labels"])  # fmt: skip
        if self._registry.retire_challenger(name, candidate):
            log.info("%s %s: the %s alias is removed (v%s serves as %s now)", STAGE,
                     self.spec.name, CHALLENGER, candidate, CHAMPION)  # fmt: skip
        return f"promoted v{candidate}"

    def _refuse(
        self,
        champion: int,
        candidate: int,
        n: int,
        evidence: dict[str, Any],
        reasons: list[str],
    ) -> None:
        key = (champion, candidate, evidence_bucket(n, self.spec.actions.promote.min_labels))
        if key in self._refused:
            return
        self._refused.add(key)
        self._record("refusal", CHAMPION, champion, candidate, evidence=evidence, reasons=reasons)

    # -- the actions topic --

    def _record(
        self,
        action: Action,
        alias: str,
        from_version: int | None,
        to_version: int | None,
        *,
        evidence: dict[str, Any] | None = None,
        reasons: list[str] | tuple[str, ...] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        self._outbox.append(
            action_record(
                action, pipeline=self.spec.name, model=self.spec.model.name, alias=alias,
                from_version=from_version, to_version=to_version, decided_by=CONTROLLER,
                evidence=evidence, reasons=reasons, details=details,
            )
        )  # fmt: skip

    async def _flush(self) -> None:
        if not self._outbox:
            return
        records = list(self._outbox)
        async with asyncio.timeout(self._settings.kafka_connect_timeout_seconds):
            await publish_actions(
                self._kafka, self.spec.actions_topic, records,
                self._settings.topic_replication_factor,
            )  # fmt: skip
        del self._outbox[: len(records)]
        for record in records:
            log.info("%s %s: recorded %s on %s", STAGE, self.spec.name, record["action"],
                     self.spec.actions_topic)  # fmt: skip


def nothing_to_do(spec: PipelineSpec) -> str | None:
    """Why a controller for ``spec`` would have nothing to do (None: it has)."""
    if spec.actions.retrain.enabled or spec.actions.promote.auto:
        return None
    return (
        f"pipeline {spec.name}: nothing for a controller to do: no actions.retrain trigger"
        " (every_labels, on_drift, metric_floor) and actions.promote.auto is false"
    )


async def run_controller(spec: PipelineSpec, spec_path: Path, settings: Settings) -> None:
    """The command: check the servers, tick until SIGTERM/SIGINT."""
    import signal

    from streams.runtime.reach import check_kafka, check_redis

    await check_kafka(settings)
    await asyncio.to_thread(check_redis, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    controller = Controller(spec, spec_path, settings)
    retrain = spec.actions.retrain
    log.info(
        "%s %s: every %g s; retrain %s; auto promotion %s; actions on %s", STAGE, spec.name,
        controller.interval, "on" if retrain.enabled else "off",
        "on" if spec.actions.promote.auto else "off", spec.actions_topic,
    )  # fmt: skip
    await controller.run(stop)
    log.info("%s %s: stopped", STAGE, spec.name)
