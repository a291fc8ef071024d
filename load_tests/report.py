"""The report of a load run as data (report.json); load_tests/markdown.py renders it."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from load_tests.config import NAIVE, PASSTHROUGH, REAL, REAL_NO_LABELS, REAL_X2, TARGETS, Profile
from load_tests.environment import Environment
from load_tests.steps import StepResult, System
from load_tests.traffic import BAD

SECTIONS = (
    "run",
    "traffic",
    "comparison",
    "latency",
    "latency_floor",
    "bursts",
    "scaling",
    "losses",
    "labels",
    "targets",
    "steps",
)
PACKAGES = ("faust-streaming", "aiokafka", "feast", "onnxruntime", "redis", "numpy")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the code under test had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "streams", "features", "models")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit or None, "uncommitted_changes_under_test": bool(dirty)}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def build_report(
    *,
    env: Environment,
    profile: Profile,
    started: float,
    searches: dict[str, Any],
    systems: list[System],
    extras: dict[str, Any],
    generator_bye: dict[str, Any],
    notes: list[str],
    memory_mb: dict[str, float],
    background_cpu: float = 0.0,
    git: dict[str, Any] | None = None,
) -> dict[str, Any]:
    steps = [step for system in systems for step in system.steps]
    latency: StepResult | None = extras.get("latency")
    floor: StepResult | None = extras.get("latency_floor")
    bursts: StepResult | None = extras.get("bursts")
    rates = {
        name: (searches.get(name) or {}).get("sustained_events_per_second")
        for name in (PASSTHROUGH, NAIVE, REAL, REAL_X2, REAL_NO_LABELS)
    }
    comparison: dict[str, Any] = {
        name: searches.get(name) for name in (PASSTHROUGH, NAIVE, REAL, REAL_NO_LABELS)
    }
    comparison["ratios"] = {
        "real_over_passthrough": _ratio(rates[REAL], rates[PASSTHROUGH]),
        "real_over_naive": _ratio(rates[REAL], rates[NAIVE]),
        "passthrough_over_naive": _ratio(rates[PASSTHROUGH], rates[NAIVE]),
        "real_no_labels_over_passthrough": _ratio(rates[REAL_NO_LABELS], rates[PASSTHROUGH]),
        "real_no_labels_over_naive": _ratio(rates[REAL_NO_LABELS], rates[NAIVE]),
    }
    one_cpu = _scoring_cpu(searches.get(REAL))
    two_cpu = _scoring_cpu(searches.get(REAL_X2))
    x2 = next((system for system in systems if system.name == REAL_X2), None)
    scaling = {
        "one_worker_events_per_second": rates[REAL],
        "two_workers_events_per_second": rates[REAL_X2],
        "two_over_one": _ratio(rates[REAL_X2], rates[REAL]),
        "scoring_cpu_us_per_event_one_worker": one_cpu[0] if one_cpu else None,
        "scoring_cpu_us_per_event_two_workers": two_cpu,
        "scoring_cpu_two_workers_over_one": _ratio(max(two_cpu), one_cpu[0])
        if one_cpu and two_cpu
        else None,
        "partitions_by_worker_two_workers": x2.assigned if x2 else [],
        "two_workers": searches.get(REAL_X2),
    }
    lat = latency.latency_ms if latency else {}
    report: dict[str, Any] = {
        "run": _run_info(env, profile, started)
        | {"background_cpu_percent": background_cpu, "git": git or {}},
        "traffic": {
            "mix": {
                "bad": profile.mix.bad,
                "unknown_entities": profile.mix.unknown,
                "valid": round(1 - profile.mix.bad - profile.mix.unknown, 4),
            },
            "pool_size": profile.pool_size,
            "search_pattern": "constant",
            "latency_pattern": profile.latency_pattern.describe(),
            "bursts_pattern": profile.bursts.describe() if profile.bursts else None,
            "event_time": "stamped when the event leaves the generator",
        },
        "comparison": comparison,
        "latency": _phase_summary(latency),
        "latency_floor": _phase_summary(floor),
        "bursts": _phase_summary(bursts),
        "scaling": scaling,
        "losses": _losses(systems),
        "labels": {
            "topic": "the spec's labels topic, else <input topic>-labels (one per system)",
            "delay_seconds": profile.label_delay,
            "fraction": profile.label_fraction,
            "sent": generator_bye.get("labels_sent"),
            "pending_at_stop": generator_bye.get("labels_pending"),
            "queued_by_phase": {step.phase: step.labels_sent for step in steps},
        },
        "targets": _targets(
            rates,
            comparison["ratios"],
            lat,
            scaling["scoring_cpu_two_workers_over_one"],
            floor.latency_ms if floor else {},
            _learning_over_scoring(searches.get(REAL)),
            extras.get("monitoring_cost") or {},
        ),
        "steps": [step.as_dict() for step in steps],
        "memory_mb_at_end": memory_mb,
        "profiles": extras.get("profiles") or {},
        # None when not measured (--only without monitoring_cost, the tiny preset)
        "monitoring_cost": extras.get("monitoring_cost"),
        "notes": notes
        + [s["note"] for s in searches.values() if s and s.get("note")]
        + _busy_machine_notes(steps),
    }
    return report


def _busy_machine_notes(steps: list[StepResult], limit: float = 20.0) -> list[str]:
    """Steps during which processes outside this run used more than ``limit``% CPU."""
    busy = [
        f"{step.system} {step.label} ({step.cpu_percent.get('other processes', 0):.0f}%)"
        for step in steps
        if step.cpu_percent.get("other processes", 0.0) > limit
    ]
    if not busy:
        return []
    return [
        f"processes outside this run used over {limit:g}% CPU (100 = one core) during: "
        + ", ".join(busy)
        + "; those figures are lower than on a quiet machine"
    ]


def _run_info(env: Environment, profile: Profile, started: float) -> dict[str, Any]:
    spec, settings = env.spec, env.settings
    return {
        "profile": profile.name,
        "started": datetime.fromtimestamp(started, UTC).isoformat(),
        "seconds": round(time.time() - started, 1),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "packages": {name: _version(name) for name in PACKAGES},
        "pipeline": {
            "spec": spec.name,
            "model": f"{spec.model.name}@{spec.model.version}",
            "batch_max_size": spec.batch.max_size,
            "batch_max_wait_ms": spec.batch.max_wait_ms,
            "input_partitions": spec.input.partitions,
        },
        "settings": {
            "kafka_fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
            "kafka_producer_max_batch_bytes": settings.kafka_producer_max_batch_bytes,
            "kafka_session_timeout_seconds": settings.kafka_session_timeout_seconds,
            "broker": env.kafka.describe() if env.kafka is not None else "external",
            "redis": "embedded redis-server",
        },
        "step_seconds": profile.step_seconds,
        "bounded_rule": f"backlog growth over the last {1 - profile.judge_from:.0%} of a step below"
        f" {profile.growth_tolerance:.0%} of the offered rate and never above"
        f" {profile.abort_seconds:g} s of offered events",
    }


def _phase_summary(step: StepResult | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {
        "pattern": step.pattern.describe(),
        "seconds": step.planned_seconds,
        "sent": step.sent,
        "achieved_rate": round(step.achieved_rate, 1),
        "latency_ms": step.latency_ms,
        "generator_lag_ms": step.generator_lag_ms,
        "backlog_max": step.backlog_max,
        "worker": step.worker,
        "cpu_percent": step.cpu_percent,
        "outcome": step.outcome,
    }


def _losses(systems: list[System]) -> dict[str, Any]:
    by_system: dict[str, dict[str, int]] = {}
    for system in systems:
        for step in system.steps:
            row = by_system.setdefault(
                step.system,
                dict.fromkeys(
                    (
                        "sent",
                        "failed_sends",
                        "predictions",
                        "dead_letters",
                        "expected_dead_letters",
                        "duplicates",
                        "misrouted",
                        "missing",
                    ),
                    0,
                ),
            )
            row["sent"] += step.sent
            row["failed_sends"] += step.failed
            row["expected_dead_letters"] += (
                step.kinds.get(BAD, 0) if system.mode != "passthrough" else 0
            )
            for key in ("predictions", "dead_letters", "duplicates", "misrouted", "missing"):
                row[key] += step.outcome.get(key, 0)
    total = sum(row["missing"] + row["failed_sends"] for row in by_system.values())
    return {
        "by_system": by_system,
        "total_missing": total,
        "definition": "inputs acknowledged by the broker with neither a prediction nor a"
        " dead letter once the system drained",
    }


def _scoring_cpu(search: dict[str, Any] | None) -> list[float]:
    """CPU µs per event of each scoring worker (not the learning worker) at a sustained step."""
    cpu = (search or {}).get("worker_cpu_us_per_event") or {}
    return [value for name, value in cpu.items() if "learning" not in name]


def _learning_over_scoring(search: dict[str, Any] | None) -> float | None:
    """The learning worker's CPU µs per label over the scoring worker's per event, at a
    sustained step where every event's label follows it (so per event is per label)."""
    cpu = (search or {}).get("worker_cpu_us_per_event") or {}
    learning = [value for name, value in cpu.items() if "learning" in name]
    scoring = _scoring_cpu(search)
    return _ratio(learning[0], max(scoring)) if learning and scoring else None


def _targets(
    rates: dict[str, float | None],
    ratios: dict[str, float | None],
    lat: dict[str, float],
    scaling_cpu: float | None,
    floor_lat: dict[str, float],
    learning_over_scoring: float | None,
    monitoring_cost: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    cost = monitoring_cost or {}
    measured = {
        "p50_ms_at_2000_poisson": lat.get("p50"),
        "p99_ms_at_2000_poisson": lat.get("p99"),
        "real_no_labels_over_passthrough": ratios["real_no_labels_over_passthrough"],
        "real_over_passthrough": ratios["real_over_passthrough"],
        "real_over_naive": ratios["real_over_naive"],
        "scoring_cpu_two_workers_over_one": scaling_cpu,
        "learning_cpu_per_label_over_scoring_per_event": learning_over_scoring,
        "monitoring_cpu_us_per_event_added": cost.get("monitoring_cpu_us_per_event_added"),
        "monitoring_stages_us_per_event": cost.get("monitoring_stages_us_per_event"),
    }
    # The pass-through worker on the same measure: what the machine and broker allow a
    # worker that does no work at all (a target past it is out of reach here).
    passthrough = {
        "p50_ms_at_2000_poisson": floor_lat.get("p50"),
        "p99_ms_at_2000_poisson": floor_lat.get("p99"),
    }
    out = []
    for name, (direction, target) in TARGETS.items():
        value = measured[name]
        met = None if value is None else (value <= target if direction == "<=" else value >= target)
        out.append(
            {
                "name": name,
                "target": target,
                "measured": value,
                "met": met,
                "direction": direction,
                "passthrough": passthrough.get(name),
            }
        )
    return out


def write_report(
    report: dict[str, Any], systems: list[System], extras: dict[str, Any], out_dir: Path
) -> None:
    from load_tests.markdown import markdown
    from load_tests.plots import plot_latency, plot_throughput  # matplotlib only here

    out_dir.mkdir(parents=True, exist_ok=True)
    report["files"] = {
        "json": "report.json",
        "markdown": "report.md",
        "throughput_plot": "throughput.png",
        "latency_plot": "latency.png",
    }
    plot_throughput(systems, out_dir / "throughput.png")
    plot_latency(systems, extras, out_dir / "latency.png")
    (out_dir / "report.json").write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    (out_dir / "report.md").write_text(markdown(report))
