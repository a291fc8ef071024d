"""The faults, and how one runs against the real pipeline under load.

Each scenario gets its own system (a variant of the pipeline with fresh topics: one scoring
worker and one learning worker, as deployed), offered a constant rate with every valid
event's label. A third of the way in, the fault is injected. A supervisor restarts any worker
that exits, as Kubernetes or compose would (after ``RESTART_DELAY_SECONDS``), and records how
it exited. When the traffic ends, the outputs are counted per input: predicted,
dead-lettered, lost (neither; must be 0) and duplicated, with the recovery time: from the end
of the fault until the backlog is back under one second of traffic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from load_tests.config import REAL, Profile
from load_tests.environment import Environment
from load_tests.processes import GeneratorProcess, Worker
from load_tests.session import start_system, start_worker, stop_system
from load_tests.steps import System
from load_tests.traffic import Pattern
from load_tests.usage import CpuMeter

RESTART_DELAY_SECONDS = 1.0
SAMPLE_SECONDS = 0.25


@dataclass
class Outcome:
    scenario: str
    inputs: int
    predicted: int
    dead_lettered: int
    lost: int
    duplicated: int
    recovery_seconds: float | None
    worker_exits: list[str] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaultRun:
    """What a fault can act on while the traffic flows."""

    env: Environment
    system: System
    rate: float
    exits: list[str] = field(default_factory=list)

    def kill(self, worker: Worker) -> None:
        os.kill(worker.process.pid, signal.SIGKILL)


Inject = Callable[[FaultRun], Awaitable[str]]  # returns a note for the table


async def kill_scoring_worker(run: FaultRun) -> str:
    run.kill(run.system.workers[0])
    return "SIGKILL, restarted by the supervisor"


async def kill_learning_worker(run: FaultRun) -> str:
    assert run.system.learner is not None
    run.kill(run.system.learner)
    return "SIGKILL, restarted by the supervisor"


def redis_outage(seconds: float) -> Inject:
    async def inject(run: FaultRun) -> str:
        assert run.env.redis is not None
        await asyncio.to_thread(run.env.redis.restart, seconds)
        budget = run.env.settings.feature_store_retry_seconds
        return f"Redis down {seconds:g} s (retry budget {budget:g} s)"

    return inject


async def broker_restart(run: FaultRun) -> str:
    assert run.env.kafka is not None
    if run.env.broker_kind != "kafka":
        return "skipped: Tansu keeps topics in memory, a restart loses them"
    started = time.monotonic()
    await asyncio.to_thread(run.env.kafka.restart, 2.0)
    return f"broker down {time.monotonic() - started:.1f} s (SIGTERM, 2 s, start)"


SCENARIOS: dict[str, Inject] = {
    "kill -9 scoring worker": kill_scoring_worker,
    "kill -9 learning worker": kill_learning_worker,
    "Redis outage inside the budget": redis_outage(5.0),
    "Redis outage past the budget": redis_outage(0.0),  # length set from the budget below
    "broker restart": broker_restart,
}


async def run_scenario(
    name: str,
    inject: Inject,
    env: Environment,
    generator: GeneratorProcess,
    profile: Profile,
    cpu: CpuMeter,
    logs: Any,
    *,
    rate: float,
    seconds: float,
    phase: int,
) -> Outcome:
    suffix = f"fault{phase}-{os.getpid()}"
    system = await start_system(env, name, REAL, suffix, generator.kinds, logs, cpu, profile)
    run = FaultRun(env, system, rate)
    supervisor = asyncio.create_task(_supervise(run, logs), name="supervisor")
    samples: list[tuple[float, int]] = []  # (time, backlog)
    try:
        topic, label_partitions = system.variant.labels_topic
        await generator.send(
            cmd="phase", phase=phase, topic=system.variant.spec.input.topic,
            partitions=system.variant.spec.input.partitions,
            pattern=asdict(Pattern("constant", rate)), duration=seconds,
            labels_topic=topic, labels_partitions=label_partitions,
            label_delay=profile.label_delay, label_fraction=profile.label_fraction,
        )  # fmt: skip
        fault_at = time.monotonic() + seconds / 3
        note, fault_end = "", None
        while phase not in generator.done:
            await asyncio.sleep(SAMPLE_SECONDS)
            samples.append((time.monotonic(), _backlog(system, generator, phase)))
            if fault_end is None and time.monotonic() >= fault_at:
                note = await inject(run)
                fault_end = time.monotonic()
        sent = int(generator.done[phase]["acked"])
        system.offered += sent
        drained = await _drain(system, generator, phase, samples, timeout=90.0)
    finally:
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        await stop_system(system, cpu)
    tally = system.meter.tally(phase)
    recovery = _recovery(samples, fault_end, rate)
    if not drained:
        note += "; the backlog had not cleared 90 s after the traffic ended"
    return Outcome(
        scenario=name, inputs=sent, predicted=tally.predictions,
        dead_lettered=tally.dead_letters, lost=tally.missing(sent),
        duplicated=tally.duplicates, recovery_seconds=recovery,
        worker_exits=run.exits, note=note,
    )  # fmt: skip


def _backlog(system: System, generator: GeneratorProcess, phase: int) -> int:
    acked = int(generator.progress.get(phase, {}).get("acked", 0))
    tally = system.meter.tally(phase)
    return acked - (tally.predictions + tally.dead_letters - tally.duplicates)


async def _drain(
    system: System,
    generator: GeneratorProcess,
    phase: int,
    samples: list[tuple[float, int]],
    timeout: float,
) -> bool:
    sent = int(generator.done[phase]["acked"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tally = system.meter.tally(phase)
        missing = tally.missing(sent)
        samples.append((time.monotonic(), missing))
        if missing == 0:
            return True
        await asyncio.sleep(SAMPLE_SECONDS)
    return False


def _recovery(
    samples: list[tuple[float, int]], fault_end: float | None, rate: float
) -> float | None:
    """Seconds from the end of the fault until the backlog was back under a second of
    traffic for good (0 when it never rose above it)."""
    if fault_end is None:
        return None
    after = [(at, backlog) for at, backlog in samples if at >= fault_end]
    last_over = max((i for i, (_, backlog) in enumerate(after) if backlog > rate), default=None)
    if last_over is None:
        return 0.0
    if last_over + 1 >= len(after):
        return None  # still behind at the end
    return round(after[last_over + 1][0] - fault_end, 1)


async def _supervise(run: FaultRun, logs: Any) -> None:
    """Restart any worker that exits, as an orchestrator would; record how it exited."""
    system = run.system
    while True:
        await asyncio.sleep(SAMPLE_SECONDS)
        for index, worker in enumerate(system.workers):
            if not worker.running:
                run.exits.append(f"scoring worker exit {worker.process.returncode}")
                system.workers[index] = await _replace(worker, "scoring", run, logs)
        learner = system.learner
        if learner is not None and not learner.running:
            run.exits.append(f"learning worker exit {learner.process.returncode}")
            system.learner = await _replace(learner, "learning", run, logs)


async def _replace(worker: Worker, role: str, run: FaultRun, logs: Any) -> Worker:
    worker.stop()  # closes its log
    await asyncio.sleep(RESTART_DELAY_SECONDS)
    n = len(run.exits)
    path = logs / f"{run.system.name}-{role}-restart{n}.log"
    return start_worker(REAL, run.system.variant.path, run.env, path, role)
