"""Run profiles: how long each phase lasts and which rates the searches start from.

``full`` is ``make load`` (under 10 minutes on a 2-core machine), ``quick`` (``--quick``) is
about a minute and gives rough figures, ``tiny`` is the integration smoke test's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from load_tests.traffic import Mix, Pattern

PASSTHROUGH, NAIVE, REAL, REAL_X2 = "passthrough", "naive", "real", "real_x2"
REAL_NO_LABELS = "real_no_labels"  # the real worker, offered events without labels
# The scoring worker's CPU per event with the spec's monitoring on and off (monitoring_cost.py)
MONITORING_COST = "monitoring_cost"
MONITORING_ON, MONITORING_OFF = "real_monitoring_on", "real_monitoring_off"


@dataclass(frozen=True)
class Search:
    """A step-up search: ``start`` events/s, times ``factor`` while the backlog stays bounded,
    then up to ``refinements`` steps between the best bounded and the first unbounded rate."""

    start: float
    factor: float = 1.6
    refinements: int = 2
    max_steps: int = 9
    # Run a step judged unsustained once more before deciding: on this noisy machine one
    # step alone once sent the naive search down to a quarter of its figure.
    confirm_failures: bool = True


@dataclass(frozen=True)
class CostPlan:
    """Monitoring on vs off: ``rounds`` pairs of ``seconds`` phases at ``rate`` events/s."""

    rate: float = 2000.0
    seconds: float = 8.0
    rounds: int = 6  # even: the creep over a run adds to as many differences as it takes from


@dataclass(frozen=True)
class Profile:
    name: str
    step_seconds: float  # one step of a search
    searches: dict[str, Search]
    latency_pattern: Pattern = Pattern("poisson", 2000.0)
    latency_seconds: float = 20.0
    bursts: Pattern | None = Pattern(
        "bursts", 1000.0, burst_rate=8000.0, burst_seconds=0.5, period=3.0
    )
    bursts_seconds: float = 12.0
    warmup: Pattern = Pattern("constant", 500.0)
    warmup_seconds: float = 2.0
    drain_seconds: float = 30.0  # longest wait for a backlog to clear
    ready_seconds: float = 120.0  # longest wait for workers to own their partitions
    mix: Mix = field(default_factory=Mix)
    label_delay: float = 2.0
    label_fraction: float = 1.0
    pool_size: int = 8192
    # A step's backlog is judged over its last (1 - judge_from) share. It is bounded when it
    # grows slower than ``growth_tolerance`` of the offered rate; a step is cut short once
    # the backlog passes ``abort_seconds`` worth of offered events.
    judge_from: float = 0.4
    growth_tolerance: float = 0.05
    abort_seconds: float = 1.5
    profile_seconds: float = 10.0  # py-spy on each worker, with --profile
    # Also search the real worker's throughput with no labels offered: what scoring alone
    # sustains, without the label join and the online learner.
    search_without_labels: bool = True
    # Start every system's worker at once, up front (faster; idle workers then share the
    # machine with the one measured, so only for the smoke test).
    prestart: bool = False
    # The scoring worker's CPU per event with monitoring on and off (None: not measured).
    monitoring_cost: CostPlan | None = CostPlan()


FULL = Profile(
    name="full",
    step_seconds=8.0,
    searches={
        PASSTHROUGH: Search(start=4000.0),
        NAIVE: Search(start=300.0),
        REAL: Search(start=3000.0),
        REAL_X2: Search(start=3000.0, factor=1.4),  # restarted from the one-worker figure
        REAL_NO_LABELS: Search(start=3000.0, factor=1.4),  # idem
    },
)

QUICK = replace(
    FULL,
    name="quick",
    step_seconds=3.0,
    searches={
        PASSTHROUGH: Search(start=6000.0, factor=2.0, refinements=1, max_steps=4),
        NAIVE: Search(start=500.0, factor=2.0, refinements=1, max_steps=4),
        REAL: Search(start=4000.0, factor=2.0, refinements=1, max_steps=4),
        REAL_X2: Search(start=4000.0, factor=1.5, refinements=0, max_steps=2),
    },
    latency_seconds=6.0,
    bursts=None,
    search_without_labels=False,
    warmup_seconds=1.0,
    drain_seconds=15.0,
    pool_size=4096,
    monitoring_cost=CostPlan(seconds=3.0, rounds=2),
)

TINY = replace(
    FULL,
    name="tiny",
    step_seconds=1.5,
    searches={
        PASSTHROUGH: Search(start=300.0, factor=2.0, refinements=0, max_steps=1),
        NAIVE: Search(start=100.0, factor=2.0, refinements=0, max_steps=1),
        REAL: Search(start=300.0, factor=2.0, refinements=0, max_steps=1),
        REAL_X2: Search(start=300.0, factor=2.0, refinements=0, max_steps=1),
    },
    latency_pattern=Pattern("poisson", 300.0),
    latency_seconds=2.0,
    bursts=Pattern("bursts", 100.0, burst_rate=600.0, burst_seconds=0.3, period=1.0),
    bursts_seconds=2.0,
    warmup=Pattern("constant", 100.0),
    warmup_seconds=1.0,
    drain_seconds=20.0,
    mix=Mix(bad=0.05, unknown=0.05),
    label_delay=0.5,
    pool_size=1024,
    search_without_labels=False,
    prestart=True,
    profile_seconds=2.0,
    monitoring_cost=None,  # the smoke test's run stays as it was
)

PROFILES = {p.name: p for p in (FULL, QUICK, TINY)}

#: What the team reports against (issue 11), as (direction, value); measured, never asserted.
TARGETS: dict[str, tuple[str, float]] = {
    "p50_ms_at_2000_poisson": ("<=", 10.0),
    "p99_ms_at_2000_poisson": ("<=", 30.0),
    # events only (real_no_labels), then with every event's label flowing (real)
    "real_no_labels_over_passthrough": (">=", 0.50),
    "real_over_passthrough": (">=", 0.40),
    "real_over_naive": (">=", 10.0),
    # each scoring worker's CPU µs per event with two workers, over one worker's
    "scoring_cpu_two_workers_over_one": ("<=", 1.15),
    # issue 13: the learning worker's CPU µs per label over the scoring worker's per event,
    # at real's sustained step (every event's label follows it, so labels = events)
    "learning_cpu_per_label_over_scoring_per_event": ("<=", 1.0),
    # issue 15: the scoring worker's CPU µs per event with the spec's monitoring on, minus off
    "monitoring_cpu_us_per_event_added": ("<=", 5.0),
    # the same, measured directly: the drift + quality stages' own time per event in that
    # worker (wall clock, so at least their CPU); the difference above is noisier than 5 µs
    "monitoring_stages_us_per_event": ("<=", 5.0),
}
