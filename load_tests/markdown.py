"""Renders a load-run report (report.py) for people: report.md and the console summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from load_tests import monitoring_cost
from load_tests.config import NAIVE, PASSTHROUGH, REAL, REAL_NO_LABELS

ROWS = (PASSTHROUGH, NAIVE, REAL, REAL_NO_LABELS)


def _f(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    run, comparison = report["run"], report["comparison"]
    git = run.get("git") or {}
    lines = [
        f"# streamscore load test ({run['profile']}), {run['started']}",
        "",
        f"{run['machine']['cpus']} CPUs, {run['machine']['platform']}, Python "
        f"{run['machine']['python']}; {run['settings']['broker']}, {run['settings']['redis']};"
        f" pipeline `{run['pipeline']['spec']}` ({run['pipeline']['model']}, batches <= "
        f"{run['pipeline']['batch_max_size']} / {run['pipeline']['batch_max_wait_ms']} ms, "
        f"{run['pipeline']['input_partitions']} partitions). Took {run['seconds']:.0f} s.",
        "",
        f"Code: commit {git.get('commit', '-')}"
        + (
            " with uncommitted changes under test"
            if git.get("uncommitted_changes_under_test")
            else ""
        )
        + f". Other processes used {run.get('background_cpu_percent', 0):.0f}% CPU"
        " (100 = one core) just before the run.",
        "",
        "Everything ran on the same machine: broker, Redis, generator, this reader and the",
        "workers share its cores (CPU per step in the Steps table, 100 = one core).",
        "",
        "## Comparison (sustained throughput: highest offered rate with a bounded backlog)",
        "",
        "| system | sustained events/s | median output/s at that rate | p50 ms | p99 ms |"
        " saturated output/s | worker CPU µs per event |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ROWS:
        row = comparison.get(name) or {}
        lat = row.get("latency_ms") or {}
        cpu = row.get("worker_cpu_us_per_event") or {}
        lines.append(
            f"| {name} | {_f(row.get('sustained_events_per_second'))} |"
            f" {_f(row.get('output_rate_median'))} | {_f(lat.get('p50'), 1)} |"
            f" {_f(lat.get('p99'), 1)} | {_f(row.get('saturated_output_rate'))} |"
            f" {' + '.join(_f(v) for v in cpu.values()) or '-'} |"
        )
    ratios = comparison["ratios"]
    lines += [
        "",
        f"real / pass-through = **{_f(ratios['real_over_passthrough'], 2)}**, "
        f"real / naive = **{_f(ratios['real_over_naive'], 1)}**, "
        f"pass-through / naive = {_f(ratios['passthrough_over_naive'], 1)}",
        "",
        "`real` is one scoring worker (`--role scoring`: primary, shadows, prediction store)"
        " plus one learning worker (`--role learning`: label join, online learner) in its own"
        " process; every event's label follows it. `real_no_labels` is the same pair offered"
        " no labels: what the scoring path alone sustains.",
        "",
        *_budget_lines(comparison),
    ]
    sections = (
        ("Latency, real pipeline", "latency"),
        ("Latency floor, pass-through worker", "latency_floor"),
        ("Bursts, real pipeline", "bursts"),
    )
    for title, key in sections:
        section = report.get(key)
        if not section:
            continue
        lat, lag = section["latency_ms"], section["generator_lag_ms"]
        lines += [
            f"## {title}: {section['pattern']}, {section['seconds']:g} s",
            "",
            "| n | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | backlog max |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {_f(lat.get('n'))} | {_f(lat.get('p50'), 1)} | {_f(lat.get('p90'), 1)} |"
            f" {_f(lat.get('p99'), 1)} | {_f(lat.get('p99_9'), 1)} | {_f(lat.get('max'), 1)} |"
            f" {_f(section['backlog_max'])} |",
            "",
            f"Generator lag behind its schedule: p99 {_f(lag.get('p99'), 1)} ms."
            + _stages_line(section.get("worker") or {}),
            "",
        ]
    scaling = report["scaling"]
    two_cpu = scaling.get("scoring_cpu_us_per_event_two_workers") or []
    lines += [
        "## Two real workers vs one",
        "",
        f"one: {_f(scaling['one_worker_events_per_second'])} events/s, two: "
        f"{_f(scaling['two_workers_events_per_second'])} events/s, ratio "
        f"**{_f(scaling['two_over_one'], 2)}**. Scoring worker CPU per event at the sustained"
        f" step: one worker {_f(scaling.get('scoring_cpu_us_per_event_one_worker'), 1)} µs,"
        f" two workers {', '.join(_f(v, 1) for v in two_cpu) or '-'} µs"
        f" (worst over one: **{_f(scaling.get('scoring_cpu_two_workers_over_one'), 2)}**);"
        f" input partitions per worker: {scaling.get('partitions_by_worker_two_workers') or '-'}.",
        "",
        "## Losses (inputs with neither a prediction nor a dead letter)",
        "",
        "| system | sent | predictions | dead letters | expected dead letters | duplicates |"
        " misrouted | missing |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in report["losses"]["by_system"].items():
        lines.append(
            f"| {name} | {row['sent']:,} | {row['predictions']:,} | {row['dead_letters']:,} |"
            f" {row['expected_dead_letters']:,} | {row['duplicates']:,} | {row['misrouted']:,} |"
            f" {row['missing'] + row['failed_sends']:,} |"
        )
    labels = report["labels"]
    lines += [
        "",
        f"Labels: {_f(labels['sent'])} sent {labels['delay_seconds']:g} s after their events"
        f" ({_f(labels['pending_at_stop'])} still pending at stop).",
        "",
        "## Targets (reported, not asserted)",
        "",
        "| target | wanted | measured | met | pass-through, same measure |",
        "| --- | ---: | ---: | :---: | ---: |",
    ]
    for target in report["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[target["met"]]
        lines.append(
            f"| {target['name']} | {target['direction']} {target['target']:g} |"
            f" {_f(target['measured'], 2)} | {met} | {_f(target.get('passthrough'), 1)} |"
        )
    lines += ["", *monitoring_cost.markdown_lines(report.get("monitoring_cost"))]
    lines += [
        "",
        "## Steps",
        "",
        "| system | step | offered/s | achieved/s | output/s | backlog end | slope/s |"
        " bounded | p50 ms | p99 ms | gen lag p99 ms |"
        " CPU % workers, broker, redis, generator, run, others |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | --- |",
    ]
    for step in report["steps"]:
        cpu = step["cpu_percent"]
        workers = sum(v for k, v in cpu.items() if "worker" in k)
        shares = (
            f"{workers:.0f}, {cpu.get('broker', 0):.0f}, {cpu.get('redis', 0):.0f}, "
            f"{cpu.get('generator', 0):.0f}, {cpu.get('run (meter, display)', 0):.0f}, "
            f"{cpu.get('other processes', 0):.0f}"
        )
        bounded = {True: "yes", False: "no", None: "-"}[step["bounded"]]
        lines.append(
            f"| {step['system']} | {step['label']} | {step['pattern']['rate']:,.0f} |"
            f" {step['achieved_rate']:,.0f} | {step['output_rate']:,.0f} |"
            f" {step['backlog_end']:,} | {step['backlog_slope']:,.0f} | {bounded} |"
            f" {_f(step['latency_ms'].get('p50'), 1)} | {_f(step['latency_ms'].get('p99'), 1)} |"
            f" {_f(step['generator_lag_ms'].get('p99'), 1)} | {shares} |"
        )
    for name, profile in (report.get("profiles") or {}).items():
        lines += _profile_lines(name, profile)
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    lines += ["", "Plots: throughput.png, latency.png. Everything else: report.json.", ""]
    return "\n".join(lines)


def _budget_lines(comparison: dict[str, Any]) -> list[str]:
    """What one worker's CPU per event allows it (the table's last column: scoring worker
    first, then the learning worker)."""
    # The scoring path alone when the run measured it; labels add the learner's load.
    real_name = REAL_NO_LABELS if comparison.get(REAL_NO_LABELS) else REAL
    passthrough = _scoring_cpu(comparison.get(PASSTHROUGH))
    real = _scoring_cpu(comparison.get(real_name))
    if passthrough is None or real is None:
        return []
    if not passthrough or not real:
        return [
            "CPU budget: not measured (a step too short for the workers' CPU to be sampled).",
            "",
        ]
    return [
        "CPU budget: a worker's Python runs on one core at a time (the GIL), so at x µs of"
        " CPU per event one worker cannot pass 1,000,000 / x events/s. At their sustained"
        f" rates the pass-through worker (consume and publish, nothing else) spent"
        f" {_f(passthrough, 1)} µs per event (a cap near {_f(1e6 / passthrough)} events/s)"
        f" and the real scoring worker {_f(real, 1)} µs (`{real_name}`, a cap near"
        f" {_f(1e6 / real)} events/s): their ratio, {_f(passthrough / real, 2)}, bounds"
        " real / pass-through for one worker each whatever the machine has to spare.",
        "",
    ]


def _scoring_cpu(row: dict[str, Any] | None) -> float | None:
    cpu = (row or {}).get("worker_cpu_us_per_event") or {}
    scoring = [v for name, v in cpu.items() if "learning" not in name]
    return scoring[0] if scoring else None


def _profile_lines(name: str, profile: dict[str, Any] | None) -> list[str]:
    if not profile or "tasks_percent" not in profile:
        return []
    rate_hz = profile["sample_rate_hz"]
    busy, idle = profile["busy_samples"] / rate_hz, profile["idle_samples"] / rate_hz
    lines = [
        "",
        f"## Where the {name} worker's time goes at {profile['rate']:,.0f} events/s",
        "",
        f"py-spy, {busy:.1f} busy thread-seconds ({idle:.1f} waiting left out); shares of the"
        " busy samples. Raw stacks: " + f"`{profile['file']}`.",
        "",
        "| task | % |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in profile["tasks_percent"].items()]
    lines += ["", "| stage (leaf-most project frame, else library) | % |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in profile["stages_percent"].items()]
    lines += ["", "| thread | % |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in profile["threads_percent"].items()]
    lines += ["", "| top self frames | % |", "| --- | ---: |"]
    lines += [f"| `{frame}` | {pct:.1f} |" for frame, pct in profile["top_self_percent"]]
    return lines


def _stages_line(worker: dict[str, float]) -> str:
    if "mean_batch_size" not in worker:
        return ""
    parts = [
        f"{stage} {worker[f'{stage}_ms_per_batch']:.2f}"
        for stage in ("decode", "enrich", "infer", "publish")
        if f"{stage}_ms_per_batch" in worker
    ]
    return (
        f" Worker: mean batch {worker['mean_batch_size']:.1f} events; ms per batch: "
        + ", ".join(parts)
        + "."
    )


def print_comparison(report: dict[str, Any], console: Console) -> None:
    comparison = report["comparison"]
    table = Table(title="pass-through vs naive vs real (same machine, same run)")
    for column in ("system", "sustained events/s", "median output/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "system" else "right")
    for name in ROWS:
        row = comparison.get(name) or {}
        if not row:
            continue
        lat = row.get("latency_ms") or {}
        table.add_row(
            name,
            _f(row.get("sustained_events_per_second")),
            _f(row.get("output_rate_median")),
            _f(lat.get("p50"), 1),
            _f(lat.get("p99"), 1),
        )
    console.print(table)
    ratios, scaling, lat = comparison["ratios"], report["scaling"], report["latency"] or {}
    latency = lat.get("latency_ms") or {}
    console.print(
        f"real/pass-through {_f(ratios['real_over_passthrough'], 2)}   "
        f"real/naive {_f(ratios['real_over_naive'], 1)}   "
        f"two workers/one {_f(scaling['two_over_one'], 2)}   "
        f"latency at {lat.get('pattern', '-')}: p50 {_f(latency.get('p50'), 1)} ms, "
        f"p99 {_f(latency.get('p99'), 1)} ms   "
        f"missing {report['losses']['total_missing']}"
    )
    cost = report.get("monitoring_cost") or {}
    if cost:
        console.print(
            f"monitoring: {_f(cost.get('scoring_cpu_us_per_event_monitoring_on'), 1)} µs CPU per"
            f" event on, {_f(cost.get('scoring_cpu_us_per_event_monitoring_off'), 1)} off at"
            f" {_f(cost.get('rate'))}/s: added"
            f" {_f(cost.get('monitoring_cpu_us_per_event_added'), 1)} µs"
            f" (target <= {monitoring_cost.TARGET_US:g})"
        )
