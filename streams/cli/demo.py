"""``streamscore demo``: the whole product on embedded servers, with a live summary.

Starts an embedded broker (Apache Kafka where Java allows, else Tansu: streams/runtime/brokers.py)
and Redis, prepares features (offline data, feast apply, materialize), trains
the demo models if absent, creates the topics, runs one worker process and a producer, and
shows what a downstream consumer sees. Stops everything it started, on Ctrl-C or after
``duration`` seconds, and reports whether every produced event came out as a prediction or
a dead letter. With ``cycle`` it also runs ``streamscore controller`` on a variant of the
spec (streams/cli/cycle.py) and shows the actions it records.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from streams.cli.bootstrap import prepare_features, train_if_needed
from streams.cli.cycle import (
    CYCLE_CONTROLLER_INTERVAL_SECONDS,
    action_text,
    cycle_model_dir,
    write_cycle_spec,
)
from streams.cli.drift_switch import DriftSwitch
from streams.cli.producer import EventProducer
from streams.cli.summary import LiveSummary
from streams.runtime.brokers import choose_broker
from streams.runtime.connections import KafkaConnection
from streams.runtime.embedded import EmbeddedRedis, free_port
from streams.runtime.processes import WorkerProcess
from streams.runtime.topics import ensure_topics, spec_topics
from streams.settings import Settings
from streams.spec import PipelineSpec

DRAIN_SECONDS = 30.0
READY_TIMEOUT = 120.0
# Labels (the generator's ground truth) follow their events this much later.
LABEL_DELAY_SECONDS = 3.0
console = Console()


def run_demo(
    spec_path: Path,
    spec: PipelineSpec,
    settings: Settings,
    *,
    duration: float | None,
    rate: float,
    bad_rate: float,
    drift: DriftSwitch | None = None,
    cycle: bool = False,
) -> bool:
    """Run the demo; True when every produced event was accounted for. ``drift`` shifts the
    producer's events part-way (``--drift``), for the summary's drift columns to react;
    ``cycle`` adds the controller (``--cycle``)."""
    choice = choose_broker(settings)
    kafka, redis = choice.broker, EmbeddedRedis()
    console.print(choice.why)
    with console.status(f"starting {kafka.describe()} and Redis"):
        kafka.start()
    try:
        redis.start()
        demo_settings = redis.client_settings(choice.client_settings(settings)).model_copy(
            update={
                "metrics_port": free_port(),
                "metrics_host": "127.0.0.1",
            }
        )
        console.print(f"kafka {kafka.bootstrap_servers}   redis {redis.url}")
        with console.status("feature repo: offline data, feast apply, materialize"):
            prepare_features(spec, demo_settings)
        with console.status("training models if absent"):
            for version in train_if_needed(spec, demo_settings):
                console.print(
                    f"trained {version.name} v{version.version}: {version.manifest.metrics}"
                )
        topics = spec_topics(spec)
        if cycle:
            spec_path, spec, demo_settings = _cycle_variant(spec_path, spec, demo_settings)
            topics = {**spec_topics(spec), spec.actions_topic: 1}
        asyncio.run(ensure_topics(KafkaConnection.from_settings(demo_settings), topics))
        log_path = demo_settings.data_dir / "demo" / "worker.log"
        worker = WorkerProcess(spec_path, demo_settings, log_path)
        console.print(
            f"worker pid {worker.process.pid}, log {log_path}, "
            f"metrics http://127.0.0.1:{demo_settings.metrics_port}/metrics"
        )
        controller = None
        try:
            if cycle:
                controller = _start_controller(spec_path, demo_settings)
            if drift is not None:
                console.print(f"drift on purpose: {drift.describe()}")
            return asyncio.run(
                _run(spec, demo_settings, worker, duration, rate, bad_rate, drift, controller)
            )
        finally:
            if controller is not None:
                code = controller.stop()
                console.print(f"controller stopped (exit code {code})")
            code = worker.stop()
            console.print(f"worker stopped (exit code {code})")
    finally:
        redis.stop()
        kafka.stop()
        console.print(f"embedded {kafka.name} and Redis stopped")


def _cycle_variant(
    spec_path: Path, spec: PipelineSpec, settings: Settings
) -> tuple[Path, PipelineSpec, Settings]:
    """The cycle's spec (written to the demo's folder), and settings whose registry is a
    copy of the demo's (the cycle moves aliases) and whose controller ticks often."""
    folder = settings.data_dir / "demo" / "cycle"
    cycle_path, cycle_spec = write_cycle_spec(spec_path, folder)
    models = cycle_model_dir(spec, settings, folder / "models")
    console.print(
        f"cycle: spec {cycle_path} (retrain on drift, automatic promotion on"
        f" {cycle_spec.actions.promote.min_labels} labels), models copied to {models}"
    )
    cycle_settings = settings.model_copy(
        update={
            "model_dir": models,
            "controller_interval_seconds": CYCLE_CONTROLLER_INTERVAL_SECONDS,
        }
    )
    return cycle_path, cycle_spec, cycle_settings


def _start_controller(spec_path: Path, settings: Settings) -> WorkerProcess:
    log_path = settings.data_dir / "demo" / "controller.log"
    command = [sys.executable, "-m", "streams.cli", "controller", "--spec", str(spec_path)]
    controller = WorkerProcess(spec_path, settings, log_path, command=command)
    console.print(f"controller pid {controller.process.pid}, log {log_path}")
    return controller


async def _run(
    spec: PipelineSpec,
    settings: Settings,
    worker: WorkerProcess,
    duration: float | None,
    rate: float,
    bad_rate: float,
    drift: DriftSwitch | None,
    controller: WorkerProcess | None = None,
) -> bool:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with console.status("waiting for the worker to join its consumer group"):
        if not await _ready(worker, stop):
            return _report(LiveSummary(spec, KafkaConnection.from_settings(settings)), 0, worker)
    producer = EventProducer(
        spec,
        KafkaConnection.from_settings(settings),
        rate=rate,
        bad_rate=bad_rate,
        label_delay=LABEL_DELAY_SECONDS,
        drift=drift,
    )
    actions_topic = spec.actions_topic if controller is not None else None
    summary = LiveSummary(spec, KafkaConnection.from_settings(settings), actions_topic)
    summary_stop = asyncio.Event()
    tasks = [
        asyncio.create_task(producer.run(stop, duration=duration), name="producer"),
        asyncio.create_task(summary.run(summary_stop), name="summary"),
    ]
    started = time.monotonic()

    def state() -> str:
        if not worker.running:
            return f"[red]exited ({worker.process.returncode})[/red]"
        if controller is not None and not controller.running:
            return f"consuming; [red]controller exited ({controller.process.returncode})[/red]"
        return "consuming"

    models = ModelFigures(spec, worker)

    def view() -> Table:
        table = summary.table(time.monotonic() - started, producer.stats.sent, state())
        models.add_rows(table)
        return table

    async def watch(render: Callable[[], None]) -> None:
        # Runs until the producer finishes, then until the outputs catch up (or time runs out).
        drain_deadline: float | None = None
        while True:
            await asyncio.sleep(0.5)
            if not worker.running:
                stop.set()
                return
            produced_all = tasks[0].done()
            counts = summary.counts
            if produced_all:
                drain_deadline = drain_deadline or time.monotonic() + DRAIN_SECONDS
                done = counts.predictions + counts.dead_letters >= producer.stats.sent
                if done or time.monotonic() > drain_deadline:
                    return
            render()

    if console.is_terminal:
        with Live(view(), console=console, refresh_per_second=4) as live:
            await watch(lambda: live.update(view()))
            live.update(view())
    else:  # piped output (CI, logs): a plain line every 5 s instead of a live table
        printed_at = [0.0]

        def print_line() -> None:
            if time.monotonic() - printed_at[0] >= 5.0:
                printed_at[0] = time.monotonic()
                console.print(line(), markup=False)

        def line() -> str:
            figures = summary.line(time.monotonic() - started, producer.stats.sent, state())
            return f"{figures} {models.line()}"

        await watch(print_line)
        console.print(line(), markup=False)

    if controller is not None:
        # The decision may come a tick after the last labels: leave the controller a few
        # ticks to record it before the summary stops reading.
        await asyncio.sleep(3 * CYCLE_CONTROLLER_INTERVAL_SECONDS)
    stop.set()
    summary_stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if controller is not None:
        _report_actions(summary, controller)
    return _report(summary, producer.stats.sent, worker)


class ModelFigures:
    """Shadow agreement and online-model metrics, read from the worker's /metrics (at most
    once a second: they change slowly and the read is an HTTP call)."""

    def __init__(self, spec: PipelineSpec, worker: WorkerProcess) -> None:
        self._spec = spec
        self._worker = worker
        self._read_at = 0.0
        self._rows: list[tuple[str, str]] = []

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at < 1.0:
            return
        self._read_at = time.monotonic()
        metric, name, rows = self._worker.metric, self._spec.name, []
        shadows = [s.name for s in self._spec.shadows]
        if self._spec.online is not None:
            shadows.append(self._spec.online.name)
        for shadow in shadows:
            agreement = metric("streamscore_shadow_agreement_ratio", pipeline=name, model=shadow)
            shed = metric("streamscore_shadow_shed_events_total", pipeline=name, model=shadow)
            if agreement is not None:
                rows.append((f"shadow {shadow}", f"agrees {agreement:.1%}, shed {shed or 0:.0f}"))
        learned = metric("streamscore_labels_total", pipeline=name, outcome="joined")
        rows.append(("labels joined", f"{learned or 0:,.0f}"))
        for model in [self._spec.model.name, *shadows]:
            if self._spec.task == "regression":
                served = "streamscore_online_metric"
                mae = metric(served, pipeline=name, model=model, metric="mae")
                rmse = metric(served, pipeline=name, model=model, metric="rmse")
                if mae is not None:
                    rows.append((f"rolling {model}", f"MAE {mae:.3f}, RMSE {rmse or 0.0:.3f}"))
                continue
            auc = metric("streamscore_online_metric", pipeline=name, model=model, metric="roc_auc")
            acc = metric("streamscore_online_metric", pipeline=name, model=model, metric="accuracy")
            if auc is not None or acc is not None:
                rows.append(
                    (
                        f"rolling {model}",
                        f"ROC AUC {auc or float('nan'):.3f}, accuracy {acc or float('nan'):.3f}",
                    )
                )
        self._rows = rows

    def add_rows(self, table: Table) -> None:
        self._refresh()
        for label, value in self._rows:
            table.add_row(label, value)

    def line(self) -> str:
        self._refresh()
        return " ".join(f"{label}=[{value}]" for label, value in self._rows)


async def _ready(worker: WorkerProcess, stop: asyncio.Event) -> bool:
    """Wait until the worker owns input partitions, so the summary shows steady state rather
    than the backlog of its start-up. False if it exited or Ctrl-C came first."""
    deadline = time.monotonic() + READY_TIMEOUT
    while worker.running and not stop.is_set() and time.monotonic() < deadline:
        assigned = await asyncio.to_thread(worker.assigned_partitions)
        if assigned:
            return True
        await asyncio.sleep(0.2)
    return False


def _report_actions(summary: LiveSummary, controller: WorkerProcess) -> None:
    console.print(f"actions recorded on {summary.actions_topic}: {len(summary.actions)}")
    for record in summary.actions:
        console.print(f"  {record.get('at')}  {action_text(record)}", markup=False)
    if not summary.actions:
        console.print(f"controller log tail:\n{controller.log_tail()}", markup=False)


def _report(summary: LiveSummary, produced: int, worker: WorkerProcess) -> bool:
    counts = summary.counts
    missing = produced - counts.predictions - counts.dead_letters
    console.print(
        f"produced {produced:,} events -> {counts.predictions:,} predictions + "
        f"{counts.dead_letters:,} dead letters; unaccounted: {missing:,}"
    )
    if not worker.running:
        console.print(f"[red]the worker exited early[/red]; last log lines:\n{worker.log_tail()}")
        return False
    if missing or counts.predictions == 0:
        console.print(f"[red]not every event came out[/red]; worker log tail:\n{worker.log_tail()}")
        return False
    return True
