"""The ``streamscore`` command line. Each command is a thin shell over a module."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.console import Console

from models.cli import models_app
from streams.errors import StreamscoreError
from streams.settings import Settings, WorkerRole
from streams.settings import load_settings as _load_settings
from streams.spec import PipelineSpec, load_spec

app = typer.Typer(
    help="Real-time ML scoring on Kafka, Feast and ONNX Runtime.", no_args_is_help=True
)
features_app = typer.Typer(help="The Feast feature repo of a pipeline.", no_args_is_help=True)
app.add_typer(features_app, name="features")
dlq_app = typer.Typer(help="The dead-letter topic of a pipeline.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(models_app, name="models")
err = Console(stderr=True)

SpecOption = Annotated[Path, typer.Option("--spec", "-s", help="Pipeline spec (YAML).")]


def _spec(path: Path) -> PipelineSpec:
    try:
        return load_spec(path)
    except StreamscoreError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def load_settings() -> Settings:
    try:
        return _load_settings()
    except StreamscoreError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


@app.command()
def worker(
    spec: SpecOption,
    role: Annotated[
        str | None,
        typer.Option(
            help="all | scoring | learning (default: STREAMSCORE_WORKER_ROLE, else all).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a worker (Faust) for the spec until SIGINT/SIGTERM: it scores events, joins
    labels and trains the online model, or only the part its role names."""
    from streams.worker import run_worker

    settings = load_settings()
    if role is not None:
        if role not in get_args(WorkerRole):
            err.print(f"[red]error:[/red] --role must be one of {', '.join(get_args(WorkerRole))}")
            raise typer.Exit(2)
        settings = settings.model_copy(update={"worker_role": role})
    pipeline = _spec(spec)
    try:
        run_worker(pipeline, settings)
    except StreamscoreError as exc:
        raise _fail(exc) from exc


@features_app.command("apply")
def features_apply(spec: SpecOption) -> None:
    """Write offline data if the spec's generator can and it is missing, register the Feast
    repo (feast apply) and materialize it into Redis."""
    from streams.bootstrap import prepare_features

    settings = load_settings()
    pipeline = _spec(spec)
    try:
        prepare_features(pipeline, settings)
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    err.print(f"feature repo {pipeline.features.repo} applied and materialized")


@features_app.command("materialize")
def features_materialize(
    spec: SpecOption,
    every: Annotated[
        float,
        typer.Option(
            help="Seconds between runs; 0 runs once. A failed run is reported and, with"
            " --every, retried at the next run.",
            min=0,
        ),
    ] = 0,
) -> None:
    """Load the latest feature values of the (applied) Feast repo into the online store
    (Redis), once or every --every seconds: keeps online features fresher than their ttl."""
    from features.store import materialize, open_store
    from streams.connections import RedisConnection

    settings = load_settings()
    pipeline = _spec(spec)
    redis = RedisConnection.from_settings(settings)
    while True:
        try:
            materialize(open_store(pipeline.features.repo, redis))
        except StreamscoreError as exc:
            if not every:
                raise _fail(exc) from exc
            err.print(f"[red]error:[/red] features materialize: {exc}")
        else:
            err.print(f"feature repo {pipeline.features.repo} materialized")
        if not every:
            return
        time.sleep(every)


@app.command()
def train(
    spec: SpecOption,
    force: Annotated[bool, typer.Option(help="Train even if the spec's model resolves.")] = False,
) -> None:
    """Fit the spec's training models on its offline data and register them (ONNX)."""
    from streams.bootstrap import train_if_needed

    settings = load_settings()
    pipeline = _spec(spec)
    try:
        versions = train_if_needed(pipeline, settings, force=force)
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    if not versions:
        err.print(f"model {pipeline.model.name}@{pipeline.model.version} exists; --force retrains")
    for version in versions:
        err.print(f"registered {version.name} v{version.version}: {version.manifest.metrics}")


@app.command()
def produce(
    spec: SpecOption,
    rate: Annotated[float, typer.Option(help="Events per second.")] = 500.0,
    duration: Annotated[
        float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    bad_rate: Annotated[float, typer.Option(help="Share of deliberately invalid events.")] = 0.0,
    seed: int = 0,
) -> None:
    """Publish synthetic events for the spec to its input topic."""
    from streams.connections import KafkaConnection
    from streams.producer import EventProducer

    settings = load_settings()
    pipeline = _spec(spec)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        kafka = KafkaConnection.from_settings(settings)
        producer = EventProducer(pipeline, kafka, rate=rate, bad_rate=bad_rate, seed=seed)
        stats = await producer.run(stop, duration=duration, count=count)
        err.print(f"sent {stats.sent} events ({stats.bad} deliberately invalid)")

    try:
        asyncio.run(main())
    except StreamscoreError as exc:
        raise _fail(exc) from exc


@app.command()
def demo(
    spec: SpecOption = Path("streams/specs/card_fraud.yaml"),
    duration: Annotated[float, typer.Option(help="Seconds to run; 0 runs until Ctrl-C.")] = 0,
    rate: Annotated[float, typer.Option(help="Events per second from the demo producer.")] = 1000.0,
    bad_rate: Annotated[float, typer.Option(help="Share of deliberately invalid events.")] = 0.01,
) -> None:
    """Everything on embedded servers: broker, Redis, Feast, training, a worker, a producer."""
    from streams.demo import run_demo

    settings = load_settings()
    pipeline = _spec(spec)
    try:
        ok = run_demo(
            spec, pipeline, settings, duration=duration or None, rate=rate, bad_rate=bad_rate
        )
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(0 if ok else 1)


@app.command()
def compare(spec: SpecOption) -> None:
    """Compare each shadow with the primary, and every model on labelled events."""
    from streams.compare import report
    from streams.connections import KafkaConnection, RedisConnection

    settings = load_settings()
    pipeline = _spec(spec)
    console = Console()
    kafka, redis = KafkaConnection.from_settings(settings), RedisConnection.from_settings(settings)
    try:
        tables = report(pipeline, kafka, redis)
    except StreamscoreError as exc:  # a broker or Redis refused; the stored evaluation is not one
        raise _fail(exc) from exc
    for table in tables:
        console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    spec: SpecOption,
    reason: Annotated[
        list[str] | None,
        typer.Option(
            help="Only dead letters with this reason (repeatable), e.g. unknown_category."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME",
            help="Only dead letters since this ISO 8601 time, or this long ago (2h, 7d).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Also resend what the current spec still rejects and what an earlier replay"
            " already resent (never a truncated or dropped original)."
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Decide and report; send nothing.")] = False,
) -> None:
    """Send dead-lettered originals back to the input (or labels) topic after a fix: those
    the spec, as it is now, accepts, once per event id."""
    from rich.table import Table

    from streams.replay import OUTCOMES, REPLAYED, parse_since
    from streams.replay_run import build_selector, replay

    settings = load_settings()
    pipeline = _spec(spec)
    try:
        start = None if since is None else parse_since(since, time.time())
        selector = build_selector(
            pipeline, settings, reasons=reason or (), since=start, force=force
        )
        report = asyncio.run(
            replay(
                pipeline, settings, selector, dry_run=dry_run,
                progress=lambda r: err.print(r.progress_line(), highlight=False, soft_wrap=True),
            )
        )  # fmt: skip
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    err.print(report.progress_line(), highlight=False, soft_wrap=True)
    title = f"dlq replay of {report.topic}" + (" (dry run: nothing sent)" if dry_run else "")
    table = Table(title=title)
    table.add_column("dead letters")
    table.add_column("count", justify="right")
    for outcome in OUTCOMES:
        label = "would replay" if outcome == REPLAYED and dry_run else outcome.replace("_", " ")
        table.add_row(label, str(report.outcomes[outcome]))
    table.add_row("total read", str(report.read), end_section=True)
    for why, count in sorted(report.still_invalid.items()):
        table.add_row(f"  still invalid: {why}", str(count))
    Console().print(table)


@app.command()
def servers() -> None:
    """Run the embedded Kafka broker and Redis in the foreground (Ctrl-C stops both).

    Prints, as `export` lines, every setting a worker or command needs to use them."""
    from streams.brokers import choose_broker
    from streams.embedded import EmbeddedRedis
    from streams.processes import settings_env

    settings = load_settings()
    choice = choose_broker(settings)
    print(f"# {choice.why}", flush=True)
    with choice.broker, EmbeddedRedis() as redis:
        client = redis.client_settings(choice.client_settings(settings))
        names = ["kafka_bootstrap_servers", "redis_url", *choice.broker.client_tuning]
        env = settings_env(client)
        for name in names:
            variable = f"STREAMSCORE_{name.upper()}"
            print(f"export {variable}={env[variable]}")
        print(f"# {choice.broker.describe()}; Ctrl-C stops both", flush=True)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # sigwait needs them blocked
        signal.sigwait(stop_signals)


monitoring_app = typer.Typer(help="What the monitoring stack reads.", no_args_is_help=True)
app.add_typer(monitoring_app, name="monitoring")


@monitoring_app.command("rules")
def monitoring_rules(
    spec: Annotated[
        list[Path], typer.Option("--spec", "-s", help="Pipeline spec (YAML); repeatable.")
    ],
) -> None:
    """Print the Prometheus rules with the specs' `slo:` thresholds (pipelines of no spec
    given get the defaults): `streamscore monitoring rules --spec S > streamscore.yml`."""
    from streams.monitoring.rules import render_rules

    specs = [_spec(path) for path in spec]
    try:
        text = render_rules(specs, [str(path) for path in spec])
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    sys.stdout.write(text)


if __name__ == "__main__":
    sys.exit(app())
