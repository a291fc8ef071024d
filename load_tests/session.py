"""One load run on a prepared environment: the plan, systems started and stopped in turn.

1. pass-through ceiling, 2. naive per-event pipeline, 3. the real pipeline (latency at
2,000 events/s Poisson, bursts, sustained throughput), the real pipeline offered no labels,
and the real pipeline with two workers. Each system gets its own topics and consumer
group, a warm-up, and is drained and stopped before the next one starts, so they never
share the machine with each other. Last, monitoring's cost: the real pipeline with the
spec's monitoring on and off, side by side, at one fixed rate (load_tests/monitoring_cost.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from load_tests import monitoring_cost, profiling
from load_tests.config import (
    MONITORING_COST,
    MONITORING_OFF,
    MONITORING_ON,
    NAIVE,
    PASSTHROUGH,
    REAL,
    REAL_NO_LABELS,
    REAL_X2,
    Profile,
)
from load_tests.display import Display
from load_tests.environment import Environment
from load_tests.measure import OutputMeter
from load_tests.processes import GeneratorProcess, Worker, baseline_process
from load_tests.report import build_report, git_state, write_report
from load_tests.steps import Runner, StepResult, System
from load_tests.traffic import Pattern
from load_tests.usage import CpuMeter
from streams.runtime.connections import KafkaConnection
from streams.runtime.processes import WorkerProcess

SYSTEMS = (PASSTHROUGH, NAIVE, REAL, MONITORING_COST)
QUIET_SECONDS = 1.0  # how long the machine's background load is sampled before the run


async def run_load(
    env: Environment,
    profile: Profile,
    out_dir: Path,
    console: Console,
    *,
    with_profiler: bool = False,
    only: tuple[str, ...] = SYSTEMS,
) -> dict[str, Any]:
    """Measure the systems in ``only`` on ``env``; returns the report (also written)."""
    session = LoadSession(env, profile, out_dir, console, with_profiler, only)
    return await session.run()


class LoadSession:
    def __init__(
        self,
        env: Environment,
        profile: Profile,
        out_dir: Path,
        console: Console,
        with_profiler: bool,
        only: tuple[str, ...],
    ) -> None:
        self.env, self.profile, self.out_dir = env, profile, out_dir
        self.with_profiler = with_profiler
        self.plan = [name for name in SYSTEMS if name in only and name != MONITORING_COST]
        cost = profile.monitoring_cost if MONITORING_COST in only else None
        self.cost_plan = cost
        self.run_id = uuid.uuid4().hex[:6]
        self.logs = out_dir / "logs"
        self.cpu = CpuMeter()
        for name, pid in env.server_pids.items():
            self.cpu.track(name, pid)
        per_search = 2 + with_profiler  # start + search (+ py-spy)
        # latency, bursts, restart on an empty broker, two workers
        real_stages = 1 + (profile.bursts is not None) + (not profile.prestart) + 2
        real_stages += per_search * profile.search_without_labels
        stages = per_search * len(self.plan) + (REAL in self.plan) * real_stages
        # pass-through: its latency phase (the floor), restart on an empty broker
        stages += (PASSTHROUGH in self.plan) * (1 + (not profile.prestart))
        # start both, the rounds (+ py-spy on each side)
        stages += 0 if cost is None else 1 + 2 * cost.rounds + 2 * with_profiler
        self.display = Display(console, stages)
        self.searches: dict[str, dict[str, Any]] = {}
        self.extras: dict[str, Any] = {
            "latency": None,
            "latency_floor": None,
            "bursts": None,
            "profiles": {},
            "monitoring_cost": None,
        }
        self.systems: list[System] = []
        self.notes: list[str] = []
        self.prestarted: dict[str, System] = {}

    async def run(self) -> dict[str, Any]:
        started = time.time()
        git = await asyncio.to_thread(git_state)
        background = await self._background_load()
        if background > 20.0:
            self.notes.append(
                f"other processes used {background:.0f}% CPU (100 = one core) before the run"
                " started: figures are lower than on a quiet machine"
            )
        generator = await GeneratorProcess.start(
            self.env.settings.kafka_bootstrap_servers,
            self.env.variant(f"lt{self.run_id}-generator").path,
            self.logs / "generator.log",
            seed=1,
            pool_size=self.profile.pool_size,
            bad=self.profile.mix.bad,
            unknown=self.profile.mix.unknown,
        )
        self.cpu.track("generator", generator.process.pid)
        self.runner = Runner(self.profile, generator, self.cpu, self.display.status)
        stopping: list[asyncio.Task[None]] = []
        try:
            with self.display:
                if self.profile.prestart:
                    self.display.stage("starting every system's worker")
                    starts = [self._start_system(name) for name in self.plan]
                    if REAL in self.plan:
                        starts.append(self._start_system(REAL_X2, REAL, workers=2))
                        if self.profile.search_without_labels:
                            starts.append(self._start_system(REAL_NO_LABELS, REAL))
                    outcomes = await asyncio.gather(*starts, return_exceptions=True)
                    # All settled: whatever started is in self.systems, stopped below.
                    for outcome in outcomes:
                        if isinstance(outcome, BaseException):
                            raise outcome
                    self.prestarted = {system.name: system for system in self.systems}
                    order = [*self.plan, REAL_NO_LABELS, REAL_X2]
                    self.systems.sort(key=lambda system: order.index(system.name))
                for name in self.plan:
                    await asyncio.gather(*stopping)  # gone before the broker restarts
                    await self._fresh_broker()
                    system = await self._start(name, self.prestarted.get(name))
                    if name in (PASSTHROUGH, REAL):
                        await self._fixed_phases(system)
                        system = await self._restarted(system)
                    await self._search(system, name)
                    if not await self.runner.finish(system):
                        self.notes.append(f"{system.name}: the backlog had not cleared at stop")
                    # Stopping (Faust commits, leaves its group) overlaps the next start
                    # when the broker is not restarted in between.
                    stopping.append(asyncio.create_task(stop_system(system, self.cpu)))
                    if name == REAL:
                        await asyncio.gather(*stopping)
                        await self._more_real()
                if self.cost_plan is not None:
                    await asyncio.gather(*stopping)
                    await self._monitoring_cost()
        finally:
            await asyncio.gather(*stopping, return_exceptions=True)
            await asyncio.gather(*(stop_system(s, self.cpu) for s in self.systems))
            await generator.stop()
        report = build_report(
            env=self.env,
            profile=self.profile,
            started=started,
            searches=self.searches,
            systems=self.systems,
            extras=self.extras,
            generator_bye=generator.bye,
            notes=self.notes,
            memory_mb=self.cpu.memory_mb(),
            background_cpu=background,
            git=git,
        )
        write_report(report, self.systems, self.extras, self.out_dir)
        return report

    async def _background_load(self) -> float:
        before = self.cpu.snapshot()
        await asyncio.sleep(QUIET_SECONDS)
        return self.cpu.percent_since(before).get("other processes", 0.0)

    async def _restarted(self, system: System) -> System:
        """The same system again on an empty broker, so that its throughput search starts
        as every other system's does, not after the latency and burst phases filled it."""
        if not self._restarts_broker:
            return system
        if not await self.runner.finish(system):  # its phases' outputs counted first
            self.notes.append(f"{system.name}: the backlog had not cleared at stop")
        await stop_system(system, self.cpu)
        await self._fresh_broker()
        return await self._start(system.name, mode=system.mode)

    @property
    def _restarts_broker(self) -> bool:
        """Each system on an empty broker (see ``Environment.fresh_broker``); not when every
        system was started up front (the smoke test), as their topics live on it."""
        return not self.profile.prestart and self.env.restarts_broker

    async def _fresh_broker(self) -> None:
        if not self._restarts_broker:
            return
        await asyncio.to_thread(self.env.fresh_broker)
        self.cpu.forget("broker")
        self.cpu.track("broker", self.env.server_pids["broker"])

    async def _start_system(
        self, name: str, mode: str | None = None, workers: int = 1, **changes: Any
    ) -> System:
        system = await start_system(
            self.env, name, mode or name, f"lt{self.run_id}-{name}",
            self.runner.generator.kinds, self.logs, self.cpu, self.profile, workers=workers,
            changes=changes,
        )  # fmt: skip
        system.labels = name != REAL_NO_LABELS
        self.systems.append(system)
        return system

    async def _start(
        self, name: str, started: System | None = None, mode: str | None = None, workers: int = 1
    ) -> System:
        self.display.stage(f"{name}: starting {workers} worker(s)" if started is None else name)
        system = started or await self._start_system(name, mode, workers)
        await self._warm_up(system)
        self.display.advance()
        return system

    async def _warm_up(self, system: System) -> None:
        profile = self.profile
        await self.runner.phase(
            system, "warm-up", profile.warmup, profile.warmup_seconds, judge=False
        )
        await self.runner.drain(system, profile.drain_seconds)

    async def _fixed(self, system: System, label: str, pattern: Any, seconds: float) -> StepResult:
        self.display.stage(f"{system.name}: {label}, {pattern.describe()}")
        step = await self.runner.phase(system, label, pattern, seconds, judge=False)
        await self.runner.drain(system, self.profile.drain_seconds)
        lat = step.latency_ms
        self.display.result(
            label, f"p50 {lat.get('p50', 0):.1f} ms, p99 {lat.get('p99', 0):.1f} ms"
        )
        self.display.advance()
        return step

    async def _fixed_phases(self, system: System) -> None:
        """Fixed-rate phases before a search. The latency phase runs on the real pipeline
        and on the pass-through worker, whose figure is the floor the broker and the machine
        put under any worker's latency at that load; bursts on the real pipeline only."""
        profile = self.profile
        latency = await self._fixed(
            system, "latency", profile.latency_pattern, profile.latency_seconds
        )
        if system.name == PASSTHROUGH:
            self.extras["latency_floor"] = latency
            return
        self.extras["latency"] = latency
        if profile.bursts is not None:
            self.extras["bursts"] = await self._fixed(
                system, "bursts", profile.bursts, profile.bursts_seconds
            )

    async def _search(self, system: System, name: str, *, start: float | None = None) -> None:
        plan = self.profile.searches[name]
        if start:
            plan = replace(plan, start=start)
        what = "" if system.labels else " (no labels offered)"
        self.display.stage(f"{name}: sustained throughput{what}, step-up search")
        found = await self.runner.search(system, plan)
        self.searches[name] = found
        rate = found["sustained_events_per_second"]
        self.display.result(name, f"sustained {rate:,.0f} events/s")
        self.display.advance()
        if self.with_profiler and name != REAL_X2:
            self.display.stage(f"{name}: sampling its worker under load (py-spy)")
            self.extras["profiles"][name] = await profiling.profile_worker(
                self.runner,
                system,
                profiling.rate_for(found),
                self.out_dir,
                self.profile.profile_seconds,
            )
            self.display.advance()

    async def _monitoring_cost(self) -> None:
        """The real pipeline with the spec's monitoring on and off, both started, offered
        the same constant rate in turn (no labels), ``rounds`` times."""
        plan = self.cost_plan
        assert plan is not None
        await self._fresh_broker()
        self.display.stage("monitoring cost: starting the real pipeline with and without")
        monitoring = self.env.spec.monitoring.model_dump(mode="json", exclude_none=True)
        on, off = await asyncio.gather(
            self._start_system(MONITORING_ON, REAL),
            self._start_system(MONITORING_OFF, REAL, monitoring={**monitoring, "enabled": False}),
        )
        for system in (on, off):
            system.labels = False
            await self._warm_up(system)
        self.display.advance()
        pattern = Pattern("constant", plan.rate)
        phases: dict[str, list[StepResult]] = {MONITORING_ON: [], MONITORING_OFF: []}
        for round_number in range(1, plan.rounds + 1):
            # Alternate which side goes first, so neither always follows the other.
            order = (on, off) if round_number % 2 else (off, on)
            for system in order:
                label = f"round {round_number}"
                self.display.stage(f"{system.name}: {label}, {pattern.describe()}")
                step = await self.runner.phase(system, label, pattern, plan.seconds, judge=False)
                await self.runner.drain(system, self.profile.drain_seconds)
                phases[system.name].append(step)
                micros = monitoring_cost.cpu_us_per_event(step)
                shown = "-" if micros is None else f"{micros:.1f}"
                self.display.result(f"{system.name} {label}", f"{shown} µs CPU per event")
                self.display.advance()
        if self.with_profiler:  # where the difference goes: each side sampled at the rate
            for system in (on, off):
                self.display.stage(f"{system.name}: sampling its worker (py-spy)")
                self.extras["profiles"][system.name] = await profiling.profile_worker(
                    self.runner, system, plan.rate, self.out_dir, self.profile.profile_seconds
                )
                self.display.advance()
        for system in (on, off):
            if not await self.runner.finish(system):
                self.notes.append(f"{system.name}: the backlog had not cleared at stop")
        await asyncio.gather(stop_system(on, self.cpu), stop_system(off, self.cpu))
        self.extras["monitoring_cost"] = monitoring_cost.summarize(
            phases[MONITORING_ON], phases[MONITORING_OFF], plan.rate, plan.seconds
        )

    async def _more_real(self) -> list[System]:
        """The real pipeline again on fresh topics (Tansu slows down as topics fill): once
        offered no labels, once with two workers from the start."""
        one = self.searches[REAL]["sustained_events_per_second"]
        systems = []
        runs = [(REAL_NO_LABELS, 1)] if self.profile.search_without_labels else []
        for name, workers in [*runs, (REAL_X2, 2)]:
            await self._fresh_broker()
            system = await self._start(name, self.prestarted.get(name), REAL, workers)
            await self._search(system, name, start=one)
            systems.append(system)
            if not await self.runner.finish(system):
                self.notes.append(f"{system.name}: the backlog had not cleared at stop")
            await stop_system(system, self.cpu)
        return systems


async def start_system(
    env: Environment, name: str, mode: str, suffix: str, kinds: str, logs: Path,
    cpu: CpuMeter, profile: Profile, *, workers: int = 1, changes: dict[str, Any] | None = None,
) -> System:  # fmt: skip
    """Topics, ``workers`` workers, the output meter; returns once the workers own every
    partition between them. ``changes`` replace sections of the spec (its variant's)."""
    variant = env.variant(suffix, **(changes or {}))
    spec = variant.spec
    kafka = KafkaConnection.from_settings(env.settings)
    await variant.create_topics(kafka)
    # The real pipeline as deployed: scoring workers, plus one learning worker when the spec
    # has labels (label join + online learner in their own process).
    learns = mode == REAL and spec.labels is not None
    role = "scoring" if learns else "all"
    started = [
        start_worker(mode, variant.path, env, logs / f"{name}-{i}.log", role)
        for i in range(1, workers + 1)
    ]
    for i, worker in enumerate(started, start=1):
        cpu.track(f"{name} worker {i}", worker.process.pid)
    learner = None
    if learns:
        learner = start_worker(mode, variant.path, env, logs / f"{name}-learning.log", "learning")
        cpu.track(f"{name} learning worker", learner.process.pid)
    passthrough = mode == PASSTHROUGH
    topics = (
        [spec.output.topic] if passthrough else [spec.output.topic, spec.output.dead_letter_topic]
    )
    # A pass-through copy carries the input's own time field; a prediction has event_time.
    time_field = (spec.event.time_field or "event_time") if passthrough else "event_time"
    meter = OutputMeter(
        kafka, topics, spec.output_partitions,
        dead_letter_topic=None if passthrough else spec.output.dead_letter_topic,
        time_key=f'"{time_field}":"'.encode(), kinds=kinds, routed=not passthrough,
    )  # fmt: skip
    system = System(name, mode, variant, started, meter, learner=learner)
    try:
        await meter.start()
        await wait_ready(system, profile.ready_seconds)
    except BaseException:
        await stop_system(system, cpu)
        raise
    return system


def start_worker(
    mode: str, spec_path: Path, env: Environment, log: Path, role: str = "all"
) -> Worker:
    settings = env.worker_settings()
    if mode == REAL:
        update: dict[str, object] = {"worker_role": role}
        return WorkerProcess(spec_path, settings.model_copy(update=update), log)
    return baseline_process(mode, spec_path, settings, log)


async def wait_ready(system: System, timeout: float) -> None:
    """Until every worker owns input partitions and together they own all of them."""
    partitions = system.variant.spec.input.partitions
    deadline = time.monotonic() + timeout
    while True:
        system.check_running()
        owned = [await asyncio.to_thread(w.assigned_partitions) for w in system.workers]
        learner = system.learner
        learning = learner is None or bool(await asyncio.to_thread(learner.assigned_partitions))
        if all(owned) and sum(o or 0 for o in owned) == partitions and learning:
            system.assigned = [int(o or 0) for o in owned]
            return
        if time.monotonic() > deadline:
            tails = "\n---\n".join(w.log_tail() for w in system.workers)
            msg = (
                f"{system.name}: workers own {owned} of {partitions} partitions after {timeout:g} s"
            )
            raise TimeoutError(f"{msg}:\n{tails}")
        await asyncio.sleep(0.2)


async def stop_system(system: System, cpu: CpuMeter) -> None:
    """Stop the meter and the workers (idempotent)."""
    with contextlib.suppress(Exception):
        await system.meter.stop()
    for i, worker in enumerate(system.workers, start=1):
        if worker.process.returncode is None:
            await asyncio.to_thread(worker.stop)
        cpu.forget(f"{system.name} worker {i}")
    if system.learner is not None:
        if system.learner.process.returncode is None:
            await asyncio.to_thread(system.learner.stop)
        cpu.forget(f"{system.name} learning worker")
