"""One system under test, and what is done to it: offer a phase of traffic, drain, search.

A *phase* is one generator run (one pattern for some seconds) against one system; every
phase has its own id, so its inputs and outputs are counted apart. A *search* is a series of
constant-rate phases (steps) going up until the backlog, produced minus output, keeps
growing over a step; the sustained throughput is the highest rate whose backlog stayed
bounded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from load_tests.config import Profile, Search
from load_tests.environment import Variant
from load_tests.measure import OutputMeter
from load_tests.processes import GeneratorProcess, Worker
from load_tests.traffic import Pattern
from load_tests.usage import CpuMeter
from load_tests.workerstats import worker_delta, worker_samples

SAMPLE_SECONDS = 0.25


class WorkerDied(RuntimeError):
    pass


@dataclass
class System:
    """A system under test: its worker processes, topics and output meter."""

    name: str
    mode: str  # passthrough | naive | real
    variant: Variant
    workers: list[Worker]
    meter: OutputMeter
    labels: bool = True  # offer each valid event's label (the default of every phase)
    offered: int = 0  # inputs the broker acknowledged, over all phases so far
    # (wall time, offered so far, outputs so far, system name) every SAMPLE_SECONDS
    series: list[tuple[float, int, int, str]] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    assigned: list[int] = field(default_factory=list)  # input partitions per worker, once ready

    # The real pipeline's label join and online learner run in their own 'learning' worker
    # (it never scores, so it is not among ``workers``); None for the baselines.
    learner: Worker | None = None

    def check_running(self) -> None:
        for worker in [*self.workers, *([self.learner] if self.learner else [])]:
            if not worker.running:
                code = worker.process.returncode
                msg = f"{self.name}: a worker exited (code {code}):\n{worker.log_tail()}"
                raise WorkerDied(msg)


@dataclass
class StepResult:
    system: str
    label: str
    phase: int
    pattern: Pattern
    planned_seconds: float
    start: float
    end: float
    sent: int
    acked: int
    failed: int
    kinds: dict[str, int]
    achieved_rate: float
    output_rate: float
    output_rate_median: float
    backlog_start: int
    backlog_end: int
    backlog_max: int
    backlog_slope: float
    bounded: bool | None
    stopped_early: bool
    generator_limited: bool
    latency_ms: dict[str, float]
    generator_lag_ms: dict[str, float]
    cpu_percent: dict[str, float]
    worker: dict[str, float]
    labels_sent: int = 0
    # Filled in once the system drained, at its end (see Runner.finish).
    outcome: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pattern"] = asdict(self.pattern) | {"description": self.pattern.describe()}
        return out


def percentiles_ms(values: np.ndarray[Any, Any]) -> dict[str, float]:
    if values.size == 0:
        return {"n": 0}
    p50, p90, p99, p999 = np.percentile(values, [50, 90, 99, 99.9]) * 1000.0
    return {
        "n": int(values.size),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "p99_9": float(p999),
        "max": float(values.max() * 1000.0),
    }


def cpu_per_event(step: StepResult) -> dict[str, float]:
    """CPU microseconds each worker process spent per event that came out in ``step``.

    A worker's Python runs on one core at a time (the GIL), so at ``x`` µs per event one
    worker cannot pass about 1,000,000 / ``x`` events/s whatever the machine has to spare.
    """
    if step.output_rate <= 0:
        return {}
    return {
        name: round(percent * 1e4 / step.output_rate, 1)
        for name, percent in step.cpu_percent.items()
        if "worker" in name
    }


class Runner:
    """Drives the generator against one system at a time and records what happened."""

    def __init__(
        self,
        profile: Profile,
        generator: GeneratorProcess,
        cpu: CpuMeter,
        status: Callable[..., None],
    ) -> None:
        self.profile = profile
        self.generator = generator
        self.cpu = cpu
        self.status = status  # display callback: status(**fields)
        self._phase = 0

    async def phase(
        self,
        system: System,
        label: str,
        pattern: Pattern,
        seconds: float,
        *,
        judge: bool,
        labels: bool | None = None,
    ) -> StepResult:
        """Offer ``pattern`` for ``seconds`` (and each valid event's label after the delay,
        unless not ``labels``); with ``judge``, decide whether it was sustained (and cut
        the phase short once it clearly is not)."""
        self._phase += 1
        phase = self._phase
        labels = system.labels if labels is None else labels
        topic, label_partitions = system.variant.labels_topic
        cpu_before = self.cpu.snapshot()
        worker_before = worker_samples(system.workers)
        start = time.time()
        base = system.offered
        await self.generator.send(
            cmd="phase",
            phase=phase,
            topic=system.variant.spec.input.topic,
            partitions=system.variant.spec.input.partitions,
            pattern=asdict(pattern),
            duration=seconds,
            labels_topic=topic,
            labels_partitions=label_partitions,
            label_delay=self.profile.label_delay,
            label_fraction=self.profile.label_fraction if labels else 0.0,
        )
        samples: list[tuple[float, int, int]] = []
        stopped = False
        abort_at = max(pattern.rate * self.profile.abort_seconds, 3000)
        while phase not in self.generator.done:
            await asyncio.sleep(SAMPLE_SECONDS)
            system.check_running()
            if not self.generator.running:
                raise RuntimeError("the generator exited during a phase")
            progress = self.generator.progress.get(phase, {})
            sample = self._sample(system, base + progress.get("acked", 0))
            samples.append(sample)
            now, offered, outputs = sample
            backlog = offered - outputs
            self._show(system, label, now - start, seconds, samples, phase)
            if judge and not stopped and now - start > 1.0 and backlog > abort_at:
                await self.generator.send(cmd="stop_phase")
                stopped = True
        done = self.generator.done[phase]
        system.offered = base + int(done["acked"])
        samples.append(self._sample(system, system.offered))
        result = self._result(system, label, phase, pattern, seconds, start, samples, done)
        result.cpu_percent = self.cpu.percent_since(cpu_before)
        result.worker = worker_delta(worker_before, worker_samples(system.workers))
        result.stopped_early = stopped
        if judge:
            result.bounded = not stopped and self._bounded(result, samples)
        system.steps.append(result)
        return result

    def _sample(self, system: System, offered: int) -> tuple[float, int, int]:
        outputs = system.meter.output_count
        now = time.time()
        system.series.append((now, offered, outputs, system.name))
        return now, offered, outputs

    def _result(
        self,
        system: System,
        label: str,
        phase: int,
        pattern: Pattern,
        seconds: float,
        start: float,
        samples: list[tuple[float, int, int]],
        done: dict[str, Any],
    ) -> StepResult:
        times = np.array([s[0] for s in samples])
        outputs = np.array([s[2] for s in samples], dtype=np.float64)
        backlog = np.array([s[1] - s[2] for s in samples])
        span = max(times[-1] - times[0], 1e-3) if len(times) > 1 else 1e-3
        per_second = _per_second_rates(times, outputs)
        published, latency = system.meter.tally(phase).latencies()
        lag = {k: float(done[f"lag_{k}"]) * 1000.0 for k in ("p50", "p99", "max")}
        return StepResult(
            system=system.name,
            label=label,
            phase=phase,
            pattern=pattern,
            planned_seconds=seconds,
            start=start,
            end=float(times[-1]),
            sent=int(done["sent"]),
            acked=int(done["acked"]),
            failed=int(done["failed"]),
            kinds=dict(done["kinds"]),
            achieved_rate=done["acked"] / max(done["duration"], 1e-3),
            output_rate=float((outputs[-1] - outputs[0]) / span),
            output_rate_median=float(np.median(per_second)) if per_second.size else 0.0,
            backlog_start=int(backlog[0]),
            backlog_end=int(backlog[-1]),
            backlog_max=int(backlog.max()),
            backlog_slope=0.0,
            bounded=None,
            stopped_early=False,
            generator_limited=lag["p99"] > 100.0,
            latency_ms=percentiles_ms(latency),
            generator_lag_ms=lag,
            cpu_percent={},
            worker={},
            labels_sent=int(done.get("labels", 0)),
        )

    def _bounded(self, result: StepResult, samples: list[tuple[float, int, int]]) -> bool:
        """Bounded: over the judged part of the step the backlog grew by less than
        ``growth_tolerance`` of the offered rate, and never passed ``abort_seconds`` worth."""
        start = result.start + self.profile.judge_from * result.planned_seconds
        window = [(t, o - out) for t, o, out in samples if t >= start]
        if len(window) < 3:
            return False
        t, backlog = np.array(window, dtype=np.float64).T
        result.backlog_slope = float(np.polyfit(t - t[0], backlog, 1)[0])
        rate = result.pattern.rate
        growing = result.backlog_slope > self.profile.growth_tolerance * rate
        too_deep = result.backlog_max > max(rate * self.profile.abort_seconds, 3000)
        return not growing and not too_deep

    def _show(
        self,
        system: System,
        label: str,
        elapsed: float,
        seconds: float,
        samples: list[tuple[float, int, int]],
        phase: int,
    ) -> None:
        recent = [s for s in samples if s[0] >= samples[-1][0] - 1.0]
        offered_rate = output_rate = 0.0
        if len(recent) > 1:
            dt = max(recent[-1][0] - recent[0][0], 1e-3)
            offered_rate = (recent[-1][1] - recent[0][1]) / dt
            output_rate = (recent[-1][2] - recent[0][2]) / dt
        published, latency = system.meter.tally(phase).latencies()
        last = latency[published >= published[-1] - 1.0] if published.size else latency
        p50, p99 = (np.percentile(last, [50, 99]) * 1000.0) if last.size else (math.nan,) * 2
        self.status(
            system=system.name,
            step=label,
            elapsed=elapsed,
            seconds=seconds,
            offered=offered_rate,
            output=output_rate,
            backlog=samples[-1][1] - samples[-1][2],
            p50=p50,
            p99=p99,
        )

    async def drain(self, system: System, timeout: float, settle: float = 3.0) -> bool:
        """Wait until every offered input came out; False if it stalls or times out."""
        deadline = time.monotonic() + timeout
        best, progressed = math.inf, time.monotonic()
        while True:
            _, offered, outputs = self._sample(system, system.offered)
            backlog = offered - outputs
            self.status(system=system.name, step="drain", backlog=backlog)
            if backlog <= 0:
                return True
            now = time.monotonic()
            if backlog < best:
                best, progressed = backlog, now
            if now - progressed > settle or now > deadline:
                return False
            system.check_running()
            await asyncio.sleep(0.2)

    async def search(
        self, system: System, search: Search, *, labels: bool = True
    ) -> dict[str, Any]:
        """Step up from ``search.start`` until a step is not sustained, then refine between
        the best sustained and the first unsustained rate. A step judged unsustained is run
        once more (``search.confirm_failures``), and the second run decides."""
        good: StepResult | None = None
        bad: StepResult | None = None
        rate, refinements, phases = search.start, 0, []
        confirmations: list[dict[str, Any]] = []
        note = ""

        async def step_at(rate: float, label: str) -> tuple[StepResult, bool]:
            step = await self.phase(
                system, label, Pattern("constant", rate), self.profile.step_seconds, judge=True
            )
            phases.append(step.phase)
            return step, await self.drain(system, self.profile.drain_seconds)

        for _ in range(search.max_steps):
            step, drained = await step_at(rate, f"{rate:,.0f}/s")
            if search.confirm_failures and drained and step.bounded is False:
                # Decided by the second run: unsustained twice, or sustained after all.
                step, drained = await step_at(rate, f"{rate:,.0f}/s again")
                confirmations.append({"rate": rate, "confirmed": step.bounded is False})
            if step.generator_limited:
                note = (
                    f"the generator could not offer {rate:,.0f}/s on time (lag p99 "
                    f"{step.generator_lag_ms['p99']:.0f} ms): the figure is a lower bound"
                )
                if step.bounded:
                    good = step
                break
            if step.bounded and (good is None or rate > good.pattern.rate):
                good = step
            if not step.bounded and (bad is None or rate < bad.pattern.rate):
                bad = step
            if not drained:
                note = f"the backlog did not clear within {self.profile.drain_seconds:g} s"
                break
            if bad is None:
                rate *= search.factor
                continue
            if good is None:
                rate /= search.factor
                if rate < 10:
                    break
                continue
            if refinements >= search.refinements or bad.pattern.rate <= good.pattern.rate * 1.05:
                break
            refinements += 1
            middle = math.sqrt(good.pattern.rate * bad.pattern.rate)
            hint = 0.97 * bad.output_rate  # an overloaded step shows the capacity
            low, high = good.pattern.rate * 1.03, bad.pattern.rate * 0.99
            rate = hint if low < hint < high else middle
        return {
            "system": system.name,
            "sustained_events_per_second": good.pattern.rate if good else 0.0,
            "sustained_phase": good.phase if good else None,
            "output_rate_median": good.output_rate_median if good else 0.0,
            "latency_ms": good.latency_ms if good else {},
            "worker_cpu_us_per_event": cpu_per_event(good) if good else {},
            "first_unsustained_events_per_second": bad.pattern.rate if bad else None,
            "saturated_output_rate": bad.output_rate if bad else None,
            "phases": phases,
            "confirmations": confirmations,
            "labels": system.labels,
            "note": f"{system.name}: {note}" if note else "",
        }

    async def finish(self, system: System) -> bool:
        """Wait for the last outputs, then count per phase what never came out."""
        drained = await self.drain(system, self.profile.drain_seconds, settle=5.0)
        for step in system.steps:
            tally = system.meter.tally(step.phase)
            step.outcome = {
                "predictions": tally.predictions,
                "dead_letters": tally.dead_letters,
                "duplicates": tally.duplicates,
                "misrouted": tally.misrouted,
                "unknown_flagged": tally.unknown_flagged,
                "missing": tally.missing(step.sent),
            }
        return drained


def _per_second_rates(times: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]) -> Any:
    if times.size < 2:
        return np.empty(0)
    edges = np.arange(times[0], times[-1] + 1e-9, 1.0)
    if edges.size < 2:
        return np.empty(0)
    at_edges = np.interp(edges, times, counts)
    return np.diff(at_edges)
