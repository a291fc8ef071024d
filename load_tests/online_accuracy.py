"""``python -m load_tests.online_accuracy``: is what the online model served as accurate as
River's own progressive validation, at 2,000 events/s? (issue 13's proof, the load half;
``make load`` runs it at its end, on the same broker and Redis.)

It starts the embedded broker and Redis as the load test does (``STREAMSCORE_EMBEDDED_BROKER``
chooses; Apache Kafka by default), prepares the phishing pipeline (tests/specs/phishing:
River's bundled Phishing dataset, 1,250 rows) in a work folder, starts one real worker with
role ``all`` and replays the dataset in its natural order at ``--rate`` events/s, ``--passes``
times in a row (event ids unique per pass: one pass at 2,000/s is only 0.6 s), each label
``--delay`` events after its event. From the online shadow's published records it computes
the served accuracy, against River's ``progressive_val_score(delay=d)`` over the same
concatenated stream, per pass and over the whole; the labels each served prediction's
snapshot lacked; and, from the worker's /metrics, the staleness histograms, orphan labels
and shed events. Target (issue 13): served within 2 points of River over the whole stream.

Writes online_accuracy.json and online_accuracy.md into ``--out``. Everything it starts is
stopped at the end, on Ctrl-C and on failure (the worker also gets a parent-death signal).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from load_tests import environment
from load_tests.environment import Environment
from load_tests.online_served import (
    PHISHING_SPEC,
    Reference,
    Replayed,
    Served,
    buckets,
    progressive_decisions,
    replay,
    river_reference,
    scored_after_ms,
    served_by_event,
    served_figures,
    share_within,
    spread,
    stream,
)
from load_tests.processes import Samples, scrape, sum_of
from load_tests.report import git_state
from streams.cli.compare import read_topics
from streams.runtime.connections import KafkaConnection
from streams.runtime.processes import WorkerProcess
from tests.specs.phishing.pages import event, rows

REPORTS = Path(__file__).resolve().parent / "reports"
TARGET_POINTS = 2.0  # issue 13: served within 2 points of River at 2,000 events/s
READY_SECONDS = 90.0
SETTLE_SECONDS = 120.0
OUTCOMES = ("joined", "orphan", "late", "duplicate", "invalid")


@dataclass(frozen=True)
class Plan:
    rate: float = 2000.0  # events per second (labels follow at the same pace)
    delay: int = 50  # events between an event and its label
    passes: int = 5  # the dataset replayed this many times in a row
    split: bool = False  # a scoring and a learning worker, not one worker with role all


Say = Callable[[str], None]


async def measure(env: Environment, plan: Plan, logs: Path, say: Say) -> dict[str, Any]:
    """One worker on a fresh variant of the prepared phishing pipeline (``env.spec``): replay,
    wait until every label is learned or orphaned, then the figures."""
    variant = env.variant(f"online-{uuid.uuid4().hex[:6]}")
    spec = variant.spec
    if spec.online is None or spec.labels is None:
        msg = f"online accuracy: spec {spec.name} declares no online model or no labels"
        raise ValueError(msg)
    kafka = KafkaConnection.from_settings(env.settings)
    await variant.create_topics(kafka)
    roles = ("scoring", "learning") if plan.split else ("all",)
    workers = [
        WorkerProcess(
            variant.path,
            env.worker_settings().model_copy(update={"worker_role": role}),
            logs / f"online-accuracy-{role}.log",
        )
        for role in roles
    ]
    worker = workers[0]  # it scores: its records, its shadow, its histograms
    settings = worker.settings
    bootstrap = settings.kafka_bootstrap_servers

    def total(name: str, **labels: str) -> float:
        return sum(w.metric(name, **labels) or 0.0 for w in workers)

    model = {"pipeline": spec.name, "model": spec.online.name}
    primary = {"pipeline": spec.name, "model": spec.model.name}
    events = len(rows()) * plan.passes
    try:
        for each in workers:
            await until(lambda each=each: ready(each), READY_SECONDS, each, "readiness")
        # One event first, so the replay meets a warm worker (its first batch pays the
        # feature store's and the models' first calls): a label that outruns its event's
        # prediction is an orphan.
        await warm_up(bootstrap, spec.input.topic)
        await until(lambda: predicted(worker), 60, worker, "warm-up prediction")
        say(f"replaying {events:,} events at {plan.rate:,.0f}/s, labels {plan.delay} events late")
        replayed = await replay(
            bootstrap,
            spec.input.topic,
            spec.labels.topic,
            rate=plan.rate,
            delay=plan.delay,
            passes=plan.passes,
        )

        def settled() -> bool:
            # Every event predicted and handed to the online shadow, every label learned or
            # an orphan (on a loaded machine a label can outrun its event's prediction).
            scored = total("streamscore_predictions_total", **primary)
            learned = total("streamscore_online_learned_total", **model)
            orphans = total("streamscore_labels_total", outcome="orphan")
            backlog = total("streamscore_shadow_backlog_events", **model)
            return scored > events and backlog == 0 and learned + orphans >= events

        for each in workers:  # both alive while waiting
            await until(settled, SETTLE_SECONDS, each, "end: every label learned or orphaned")
        # Read while the worker runs: its last shadow batch may still be publishing (the
        # backlog counts batches not yet taken); the read ends after 2 s without a record.
        records = await read_topics(kafka, [spec.output.topic, spec.shadow_topic])
        samples: dict[Any, float] = {}
        for each in workers:  # the label counters are the learning worker's
            samples.update(scrape(each.settings.metrics_port) or {})
    finally:
        # Not awaited in a thread: on Ctrl-C the loop is being torn down, and the workers
        # must stop all the same.
        exit_code = max(abs(w.stop()) for w in workers)
    served = served_by_event(records.get(spec.shadow_topic, []), spec.online.name)
    result = served_figures(served, [y for _, y in stream(plan.passes)], plan.delay)
    reference = river_reference(spec.online, plan.delay, plan.passes)
    threshold = spec.model.threshold if spec.model.threshold is not None else 0.5
    decisions = progressive_decisions(spec.online, plan.delay, plan.passes, threshold)
    report = summarize(plan, len(rows()), result, reference, samples, model, replayed)
    report["river_same_rule"] = sum(decisions) / len(decisions)
    report["threshold"] = threshold
    scored_after = scored_after_ms(records.get(spec.output.topic, []), spec.model.name)
    return {
        **report,
        "primary_scored_after_ms": spread(scored_after),
        "worker_exit_code": exit_code,
    }


async def until(
    condition: Callable[[], bool], timeout: float, worker: WorkerProcess, what: str
) -> None:
    """Poll ``condition`` until it holds; fails with the worker's log if it exits or time
    runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not worker.running:
            msg = f"online accuracy: the worker exited waiting for {what}:\n{worker.log_tail()}"
            raise RuntimeError(msg)
        if time.monotonic() > deadline:
            msg = f"online accuracy: no {what} in {timeout:g} s:\n{worker.log_tail()}"
            raise TimeoutError(msg)
        await asyncio.sleep(0.1)


def ready(worker: WorkerProcess) -> bool:
    return (worker.probe("/ready") or (0,))[0] == 200


def predicted(worker: WorkerProcess) -> bool:
    return bool(worker.metric("streamscore_predictions_total"))


async def warm_up(bootstrap: str, topic: str) -> None:
    value = orjson.dumps({**event(0, rows()[0][0], datetime.now(UTC)), "page_id": "warmup"})
    producer = KafkaConnection(bootstrap).producer()
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"warmup")
    finally:
        await producer.stop()


def summarize(
    plan: Plan,
    pass_size: int,
    served: Served,
    reference: Reference,
    samples: Samples,
    model: dict[str, str],
    replayed: Replayed,
) -> dict[str, Any]:
    """The report's figures: from the published records (``served``), River's reference and
    the worker's last /metrics (``samples``)."""

    def metric(name: str, **labels: str) -> float | None:
        wanted = set(labels.items())
        values = [v for (n, ls), v in samples.items() if n == name and wanted <= set(ls)]
        return sum(values) if values else None

    difference = (served.accuracy - reference.whole) * 100
    passes = [
        {"pass": p, "served": s, "river": r, "difference_points": (s - r) * 100}
        for p, (s, r) in enumerate(
            zip(served.accuracy_per_pass(pass_size), reference.per_pass, strict=True), start=1
        )
    ]
    behind = spread(served.behind.values())
    behind_histogram = buckets(samples, "streamscore_online_labels_behind", **model)
    age_histogram = buckets(samples, "streamscore_online_snapshot_age_seconds", **model)
    return {
        "plan": asdict(plan),
        "events": served.events,
        "replay": {
            "events_per_second": replayed.events_per_second,
            "seconds": replayed.seconds,
            "max_lag_ms": replayed.max_lag_seconds * 1000,
        },
        "served_accuracy": served.accuracy,
        "river_reference": reference.whole,
        "difference_points": difference,
        "target_points": TARGET_POINTS,
        "met": abs(difference) <= TARGET_POINTS,
        "passes": passes,
        "median_pass_difference_points": statistics.median(p["difference_points"] for p in passes),
        "labels_behind": behind,
        "labels_behind_ms_of_arrivals": {k: v / plan.rate * 1000 for k, v in behind.items()},
        "labels_behind_histogram": {
            "observed": behind_histogram.get(math.inf, 0.0),
            **{f"<={b}": share_within(behind_histogram, b) for b in (5, 10, 50)},
        },
        "snapshot_age_histogram": {
            f"<={round(b * 1000)}ms": share_within(age_histogram, b)
            for b in (0.01, 0.05, 0.1, 0.25)
        },
        "missing_records": len(served.missing),
        "labels": {o: sum_of(samples, "streamscore_labels_total", outcome=o) for o in OUTCOMES},
        "shed": metric("streamscore_shadow_shed_events_total", **model) or 0.0,
        "shadow_errors": metric("streamscore_shadow_errors_total", **model) or 0.0,
        "reported_accuracy": metric("streamscore_online_metric", **model, metric="accuracy"),
        "as_learned_accuracy": metric(
            "streamscore_online_as_learned_metric", **model, metric="accuracy"
        ),
    }


def run(env: Environment, plan: Plan, out_dir: Path, say: Say) -> dict[str, Any]:
    """Measure on ``env`` (the prepared phishing pipeline), add where and when, write the
    report files into ``out_dir``."""
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    report = asyncio.run(measure(env, plan, out_dir / "logs", say))
    report = {
        "command": command_line(plan),
        **git_state(),
        "broker": env.broker_kind,
        "started": started.isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        **report,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "online_accuracy.json").write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    (out_dir / "online_accuracy.md").write_text(markdown(report))
    say(headline(report))
    return report


def run_after_load(env: Environment, plan: Plan, out_dir: Path, say: Say) -> dict[str, Any]:
    """``make load``'s last part: the phishing pipeline prepared beside the load test's own
    (same broker, Redis and model registry; its own feature repo copy), then ``run``."""
    env.fresh_broker()  # Tansu only, as before every system
    workdir = env.workdir / "phishing"
    spec, _ = environment.prepare(PHISHING_SPEC, workdir, env.settings)
    phishing = Environment(spec, env.settings, workdir, env.server_pids, env.kafka, env.redis)
    return run(phishing, plan, out_dir, say)


def command_line(plan: Plan) -> str:
    return (
        f"python -m load_tests.online_accuracy --rate {plan.rate:g} --delay {plan.delay}"
        f" --passes {plan.passes}"
    )


def headline(report: dict[str, Any]) -> str:
    verdict = "met" if report["met"] else "NOT met"
    return (
        f"online model at {report['plan']['rate']:,.0f} events/s: served accuracy"
        f" {report['served_accuracy']:.2%}, River progressive_val_score(delay="
        f"{report['plan']['delay']}) {report['river_reference']:.2%}, difference"
        f" {report['difference_points']:+.2f} points (target within {report['target_points']:g}:"
        f" {verdict})"
    )


def markdown(report: dict[str, Any]) -> str:
    """online_accuracy.md: the figures, each named by what it is computed from."""
    plan = report["plan"]
    behind, in_ms = report["labels_behind"], report["labels_behind_ms_of_arrivals"]
    hist, age = report["labels_behind_histogram"], report["snapshot_age_histogram"]
    labels, load = report["labels"], report["load_average_1min"]
    replayed = report["replay"]
    after = report.get("primary_scored_after_ms") or dict.fromkeys(
        ("median", "p90", "max"), math.nan
    )
    n = report["events"]

    def pct(value: float | None) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.1%}"

    lines = [
        f"# Online model: served accuracy at {plan['rate']:,.0f} events/s",
        "",
        f"`{report['command']}` of commit {report.get('commit')}"
        f"{' (with uncommitted changes)' if report.get('uncommitted_changes_under_test') else ''},"
        f" {report['started']}, on"
        f" {report['broker']} ({report['cpus']} CPUs, load average {load['before']:.1f} before"
        f" and {load['after']:.1f} after).",
        "",
        f"River's Phishing stream (1,250 rows, natural order) x {plan['passes']} passes ="
        f" {n:,} events (ids unique per pass), offered at {plan['rate']:,.0f}/s (achieved"
        f" {replayed['events_per_second']:,.0f}/s, at most {replayed['max_lag_ms']:.0f} ms behind"
        f" schedule), each label sent {plan['delay']} events"
        f" ({plan['delay'] / plan['rate'] * 1000:g} ms) after its event, "
        + (
            "a scoring worker and a learning worker (`--split`)."
            if plan.get("split")
            else "one worker with role `all`."
        ),
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| **served accuracy** (the online shadow's published decisions vs labels, all"
        f" passes) | **{pct(report['served_accuracy'])}** |",
        f"| River `progressive_val_score(delay={plan['delay']})`, same model, same"
        f" concatenated stream | {pct(report['river_reference'])} |",
        f"| River's progressive validation deciding as the service does (score >="
        f" {report.get('threshold', 0.5):g}: River's `predict_one` breaks an untrained model's"
        f" 0.5 ties the other way) | {pct(report.get('river_same_rule'))} |",
        f"| difference, served - River (target: within {report['target_points']:g} points) |"
        f" {report['difference_points']:+.2f} points ({'met' if report['met'] else 'not met'}) |",
        f"| median over passes of the per-pass difference |"
        f" {report['median_pass_difference_points']:+.2f} points |",
        "| labels behind per served prediction (labels sent before its event that its"
        " snapshot had not learned, from the records' `learned_labels`; 0 = River's freshness,"
        " below 0 = it had learned labels sent after its event): min / median / p90 / max |"
        f" {behind['min']:.0f} / {behind['median']:.0f} / {behind['p90']:.0f} /"
        f" {behind['max']:.0f} ({in_ms['median']:.1f} / {in_ms['p90']:.1f} /"
        f" {in_ms['max']:.1f} ms of label arrivals for median / p90 / max) |",
        f"| `streamscore_online_labels_behind` <= 5 / <= 10 / <= 50 ({hist['observed']:,.0f}"
        f" predictions observed) | {pct(hist['<=5'])} / {pct(hist['<=10'])} /"
        f" {pct(hist['<=50'])} |",
        "| `streamscore_online_snapshot_age_seconds` <= 10 / 50 / 100 / 250 ms |"
        f" {' / '.join(pct(v) for v in age.values())} |",
        "| labels joined / orphan / late / duplicate / invalid |"
        f" {' / '.join(f'{labels[o]:,.0f}' for o in OUTCOMES)} |",
        "| the primary's prediction, event to scored (`scored_at` - `event_time`; stored a"
        " publish later): median / p90 / max |"
        f" {' / '.join(f'{after[k]:.0f}' for k in ('median', 'p90', 'max'))} ms |",
        "| online shadow: events shed / errors / replayed events with no record |"
        f" {report['shed']:,.0f} / {report['shadow_errors']:,.0f} /"
        f" {report['missing_records']:,} |",
        "| the service's own figures: `streamscore_online_metric` (served, last 1,000 labels)"
        " / `streamscore_online_as_learned_metric` |"
        f" {pct(report['reported_accuracy'])} / {pct(report['as_learned_accuracy'])} |",
        "",
        "| pass | served | River | difference (points) |",
        "| ---: | ---: | ---: | ---: |",
        *(
            f"| {p['pass']} | {pct(p['served'])} | {pct(p['river'])} |"
            f" {p['difference_points']:+.2f} |"
            for p in report["passes"]
        ),
        "",
        "Later passes score higher on both sides: the model has seen those pages before.",
    ]
    if labels["orphan"]:
        lines.append(
            "An orphan label (it arrived before its event's prediction was stored) is never"
            " learned: each adds one to the labels behind of every later prediction."
        )
    return "\n".join([*lines, ""])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.online_accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default = Plan()
    parser.add_argument("--rate", type=float, default=default.rate, help="events per second")
    parser.add_argument("--delay", type=int, default=default.delay, help="label delay, events")
    parser.add_argument("--passes", type=int, default=default.passes, help="dataset passes")
    parser.add_argument(
        "--split",
        action="store_true",
        help="a scoring worker and a learning worker (default: one worker with role all)",
    )
    parser.add_argument("--out", type=Path, help="report folder (default: reports/<time>-online)")
    parser.add_argument("--log-level", default="warn", help="the worker's log level")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C and SIGTERM both unwind the run, which stops everything it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    plan = Plan(rate=args.rate, delay=args.delay, passes=args.passes, split=args.split)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or REPORTS / f"{stamp}-online"
    workdir = Path(tempfile.mkdtemp(prefix="streamscore-online-"))
    say = print
    try:
        with environment.embedded(PHISHING_SPEC, workdir, args.log_level, say) as env:
            run(env, plan, out_dir, say)
    except KeyboardInterrupt:
        say("interrupted: every process this run started is stopped")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"report: {out_dir / 'online_accuracy.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
