"""The ``streamscore`` command line. Each command is a thin shell over a module."""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.markup import escape

from features.fast_feast import skip_feast_type_checks
from models.cli import models_app
from streams.errors import SpecError, StreamscoreError
from streams.settings import Settings, SettingsError, WorkerRole, unknown_variables
from streams.settings import load_settings as _load_settings
from streams.spec import PipelineSpec, load_spec


class _Cli(typer.Typer):
    """The app, failing in one line: what ``explain`` knows becomes one stderr line and an
    exit status; anything else (a bug) keeps its traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            explained = explain(exc)
            if explained is None:
                raise
            message, status = explained
            _say_error(message)
            sys.exit(status)


app = _Cli(help="Real-time ML scoring on Kafka, Feast and ONNX Runtime.", no_args_is_help=True)
features_app = typer.Typer(help="The Feast feature repo of a pipeline.", no_args_is_help=True)
app.add_typer(features_app, name="features")
dlq_app = typer.Typer(help="The dead-letter topic of a pipeline.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(models_app, name="models")
err = Console(stderr=True)

SpecOption = Annotated[Path, typer.Option("--spec", "-s", help="Pipeline spec (YAML).")]


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The one place that turns an error into one line and an exit status: 2 for a spec or
    a setting to fix, 1 for anything else the project expects (a server that does not
    answer, a port in use, a model that cannot serve). None for a bug."""
    from aiokafka.errors import KafkaError
    from redis import RedisError

    if isinstance(exc, (SpecError, SettingsError)):
        return one_line(str(exc)), 2
    if isinstance(exc, StreamscoreError):
        return one_line(str(exc)), 1
    if isinstance(exc, KafkaError):  # past the start-up check: the broker went away
        return one_line(f"Kafka: {exc!r} (STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS)"), 1
    if isinstance(exc, RedisError):
        return one_line(f"Redis: {exc!r} (STREAMSCORE_REDIS_URL)"), 1
    if isinstance(exc, UnicodeDecodeError):
        return one_line(f"a file is not UTF-8 text: {exc}"), 2
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return one_line(f"a port is in use: {exc}"), 1
    return None


def one_line(message: str) -> str:
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def _say_error(message: str) -> None:
    # Never wrapped, whatever the width: one error is one line, for people and for logs.
    err.print(f"[red]error:[/red] {escape(one_line(message))}", soft_wrap=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        print(f"streamscore {_distribution_version()}")
        raise typer.Exit


def _distribution_version() -> str:
    try:
        return metadata.version("streamscore")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


@app.callback()
def _start(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Real-time ML scoring on Kafka, Feast and ONNX Runtime."""
    for warning in unknown_variables():
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True, highlight=False)


def _spec(path: Path) -> PipelineSpec:
    try:
        return load_spec(path)
    except SpecError as exc:
        if exc.refs_without_default and exc.feature_repo is not None:
            unknown = _refs_not_in_repo(exc.refs_without_default, exc.feature_repo)
            if unknown:
                _say_error(f"{path}: features.refs: {'; '.join(unknown)}")
                raise typer.Exit(2) from exc
        _say_error(str(exc))
        raise typer.Exit(2) from exc


def _refs_not_in_repo(refs: tuple[str, ...], repo: Path) -> list[str]:
    """Which of ``refs`` the Feast repo does not define (none if it cannot be read)."""
    from features.definitions import RepoFeatures  # imports Feast: only on this error

    try:
        return RepoFeatures.read(repo).unknown(refs)
    except StreamscoreError:
        return []


def load_settings() -> Settings:
    try:
        return _load_settings()
    except StreamscoreError as exc:
        _say_error(str(exc))
        raise typer.Exit(2) from exc


def _fail(exc: Exception) -> typer.Exit:
    explained = explain(exc)
    message, status = explained if explained is not None else (str(exc), 1)
    _say_error(message)
    return typer.Exit(status)


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
    settings = load_settings()
    if role is not None:
        if role not in get_args(WorkerRole):
            _say_error(f"--role must be one of {', '.join(get_args(WorkerRole))}")
            raise typer.Exit(2)
        settings = settings.model_copy(update={"worker_role": role})
    pipeline = _spec(spec)
    # Only now the heavy imports (Feast: seconds), so a bad spec or setting fails at once.
    skip_feast_type_checks()
    from streams.runtime.worker import run_worker

    try:
        run_worker(pipeline, settings)
    except StreamscoreError as exc:
        raise _fail(exc) from exc


@features_app.command("apply")
def features_apply(spec: SpecOption) -> None:
    """Write offline data if the spec's generator can and it is missing, register the Feast
    repo (feast apply) and materialize it into Redis."""
    from streams.cli.bootstrap import prepare_features
    from streams.runtime.reach import check_redis

    settings = load_settings()
    pipeline = _spec(spec)
    try:
        check_redis(settings)  # materialize writes there: ask before minutes of work
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
    from streams.runtime.connections import RedisConnection

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
    from_stream: Annotated[
        bool,
        typer.Option(
            help="Fit the primary's estimator on the labelled vectors the service served (the"
            " labelled topic) and register it as the 'challenger', with its lineage."
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME",
            help="With --from-stream: only records written since this ISO 8601 time, or this"
            " long ago (2h, 7d).",
        ),
    ] = None,
    min_rows: Annotated[
        int | None,
        typer.Option(
            help="With --from-stream: fewest rows to train on (training.min_stream_rows)."
        ),
    ] = None,
) -> None:
    """Fit the spec's training models on its offline data and register them (ONNX)."""
    from streams.cli.bootstrap import train_if_needed

    settings = load_settings()
    pipeline = _spec(spec)
    if from_stream:
        _train_from_stream(pipeline, settings, since, min_rows)
        return
    try:
        versions = train_if_needed(pipeline, settings, force=force)
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    if not versions:
        err.print(f"model {pipeline.model.name}@{pipeline.model.version} exists; --force retrains")
    for version in versions:
        err.print(f"registered {version.name} v{version.version}: {version.manifest.metrics}")


def _train_from_stream(
    pipeline: PipelineSpec, settings: Settings, since: str | None, min_rows: int | None
) -> None:
    from streams.cli.replay import parse_since
    from streams.cli.train_stream import read_labelled, train_challenger
    from streams.runtime.reach import check_kafka

    try:
        asyncio.run(check_kafka(settings))
        start = None if since is None else parse_since(since, time.time())
        records = asyncio.run(read_labelled(pipeline, settings, start))
        done = train_challenger(pipeline, settings, records, since=start, min_rows=min_rows)
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    version = done.version
    lineage = version.manifest.lineage
    assert lineage is not None
    spans = ", ".join(f"{p}: {a}-{b}" for p, (a, b) in sorted(lineage.offsets.items()))
    err.print(
        f"registered {version.name} v{version.version} as 'challenger': {lineage.rows} rows"
        f" of {lineage.topic} (partition: offsets {spans}), sha256 {lineage.sha256[:12]},"
        f" held-out tail from {lineage.holdout_from} ({lineage.holdout_rows} rows):"
        f" {lineage.metrics}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def controller(spec: SpecOption) -> None:
    """Retrain the primary from the stream when the spec's actions.retrain triggers say so,
    and with actions.promote.auto promote its challenger on the evidence; each action is
    recorded on the actions topic. One acts per pipeline (a Redis lease: others wait).
    SIGTERM/SIGINT stop it."""
    import logging

    from streams.actions.controller import nothing_to_do, run_controller

    settings = load_settings()
    pipeline = _spec(spec)
    idle = nothing_to_do(pipeline)
    if idle is not None:
        _say_error(idle)
        raise typer.Exit(2)
    levels = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING}
    logging.basicConfig(
        level=levels.get(settings.log_level, settings.log_level.upper()),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        asyncio.run(run_controller(pipeline, spec, settings))
    except StreamscoreError as exc:
        raise _fail(exc) from exc


@app.command()
def produce(
    spec: SpecOption,
    rate: Annotated[float, typer.Option(help="Events per second.")] = 500.0,
    duration: Annotated[
        float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    bad_rate: Annotated[float, typer.Option(help="Share of deliberately invalid events.")] = 0.0,
    labels_delay: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Send each valid event's label (the generator's ground truth) to the spec's"
            " labels topic this long after it, as a label source would (default: no labels).",
            show_default=False,
        ),
    ] = None,
    labels_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of valid events whose label is sent.")
    ] = 1.0,
    seed: int = 0,
    drift: DriftOption = None,
    drift_after: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds after the start when --drift begins.")
    ] = 0.0,
) -> None:
    """Publish synthetic events for the spec to its input topic, and their labels with
    --labels-delay; a progress line every few seconds."""
    from streams.cli.producer import EventProducer, labels_refusal
    from streams.runtime.connections import KafkaConnection
    from streams.runtime.reach import check_kafka
    from streams.runtime.topics import declare_topics_in_time

    settings = load_settings()
    pipeline = _spec(spec)
    if labels_delay is not None:
        refusal = labels_refusal(pipeline, labels_delay)
        if refusal is not None:
            _say_error(f"--labels-delay: {refusal}")
            raise typer.Exit(2)
    switch = _drift_switch(pipeline, drift, drift_after)

    async def main() -> None:
        await check_kafka(settings)
        await declare_topics_in_time(pipeline, settings)  # as a worker does: spec partitions
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        kafka = KafkaConnection.from_settings(settings)
        producer = EventProducer(
            pipeline, kafka, rate=rate, bad_rate=bad_rate, seed=seed,
            label_delay=labels_delay, label_share=labels_share, drift=switch,
        )  # fmt: skip
        progress = asyncio.create_task(_report_progress(producer, stop), name="progress")
        try:
            stats = await producer.run(stop, duration=duration, count=count)
        finally:
            progress.cancel()
        err.print(producer.progress_line(), highlight=False, soft_wrap=True)
        err.print(
            f"sent {stats.sent} events ({stats.bad} deliberately invalid), {stats.labels} labels",
            highlight=False,
        )

    try:
        asyncio.run(main())
    except StreamscoreError as exc:
        raise _fail(exc) from exc


DriftOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="FIELD=CHANGE",
        help="Shift an event field after --drift-after (repeatable): FIELD=xFACTOR or"
        " FIELD=+OFFSET for an int/float field (kept within its min/max), FIELD=VALUE to pin"
        " a category or bool field; e.g. amount=x3.",
        show_default=False,
    ),
]


def _drift_switch(pipeline: PipelineSpec, drift: list[str] | None, after: float) -> Any:
    """The producer's drift switch (None without --drift); a bad one exits 2 naming it."""
    from streams.cli.drift_switch import DriftSwitch, parse_shifts
    from streams.errors import DriftSwitchError

    if not drift:
        return None
    try:
        return DriftSwitch(parse_shifts(pipeline.event, drift), after)
    except DriftSwitchError as exc:
        _say_error(str(exc))
        raise typer.Exit(2) from exc


#: How often ``produce`` prints its progress line.
PROGRESS_SECONDS = 5.0


async def _report_progress(producer: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(PROGRESS_SECONDS)
        err.print(producer.progress_line(), highlight=False, soft_wrap=True)


@app.command()
def demo(
    spec: SpecOption = Path("streams/specs/card_fraud.yaml"),
    duration: Annotated[float, typer.Option(help="Seconds to run; 0 runs until Ctrl-C.")] = 0,
    rate: Annotated[float, typer.Option(help="Events per second from the demo producer.")] = 1000.0,
    bad_rate: Annotated[float, typer.Option(help="Share of deliberately invalid events.")] = 0.01,
    drift: DriftOption = None,
    drift_after: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Seconds after the producer starts when --drift begins (the summary shows a"
            " few windows like training first).",
        ),
    ] = 20.0,
    cycle: Annotated[
        bool,
        typer.Option(
            "--cycle",
            help="Also run `streamscore controller` on a variant of the spec whose triggers a"
            " short demo reaches (drift -> retrain from the stream -> challenger shadowed ->"
            " automatic promotion or refusal); the summary shows the actions. Without --drift,"
            " drifts amount=x3.",
        ),
    ] = False,
) -> None:
    """Everything on embedded servers: broker, Redis, Feast, training, a worker, a producer."""
    from streams.cli.cycle import DEFAULT_DRIFT
    from streams.cli.demo import run_demo

    settings = load_settings()
    pipeline = _spec(spec)
    if cycle and not drift:
        drift = [DEFAULT_DRIFT]
    switch = _drift_switch(pipeline, drift, drift_after)
    try:
        ok = run_demo(
            spec, pipeline, settings, duration=duration or None, rate=rate, bad_rate=bad_rate,
            drift=switch, cycle=cycle,
        )  # fmt: skip
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(0 if ok else 1)


@app.command()
def compare(spec: SpecOption) -> None:
    """Compare each shadow with the primary, and every model on labelled events."""
    from streams.cli.compare import report
    from streams.runtime.connections import KafkaConnection, RedisConnection
    from streams.runtime.reach import check_redis, missing_topics

    settings = load_settings()
    pipeline = _spec(spec)
    console = Console()
    kafka, redis = KafkaConnection.from_settings(settings), RedisConnection.from_settings(settings)
    try:
        # compare reads what a running worker wrote: Kafka's topics and Redis must answer.
        topics = [pipeline.output.topic, pipeline.shadow_topic]
        missing = asyncio.run(missing_topics(settings, topics))
        check_redis(settings)
        if missing:
            _say_error(
                f"compare: no topic {' or '.join(missing)} on {settings.kafka_bootstrap_servers}:"
                f" no worker has run this spec there yet. Start `streamscore worker --spec"
                f" {spec}` (it creates the topics) and send traffic (`streamscore produce"
                f" --spec {spec} --labels-delay 3`), or check STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS"
            )
            raise typer.Exit(1)
        tables = report(pipeline, kafka, redis)
    except StreamscoreError as exc:  # a broker or Redis refused; the stored evaluation is not one
        raise _fail(exc) from exc
    for table in tables:
        # As wide as the table needs, past the terminal's width if need be: model names
        # and figures are never cut to fit 80 columns.
        needed = Console(width=10_000).measure(table).maximum
        Console(width=max(console.width, needed)).print(table)
    if all(table.row_count == 0 for table in tables):
        err.print(
            f"nothing to compare yet: no shadow predictions on {pipeline.shadow_topic} and no"
            " labelled evaluation in Redis. compare reads what a worker wrote: run"
            f" `streamscore worker --spec {spec}` and send traffic with labels"
            f" (`streamscore produce --spec {spec} --labels-delay 3`)",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def skew(
    spec: SpecOption,
    examples: Annotated[int, typer.Option(min=0, help="Latest mismatches to show.")] = 10,
) -> None:
    """What the online/offline skew check (spec monitoring.skew) found: predictions checked,
    mismatches and the largest difference per feature, the latest mismatches."""
    from streams.cli.skew import read_report, summary, tables
    from streams.runtime.connections import RedisConnection
    from streams.runtime.reach import check_redis

    settings = load_settings()
    pipeline = _spec(spec)
    try:
        check_redis(settings)  # the learner's record of the checks is in Redis
        report = read_report(pipeline, RedisConnection.from_settings(settings), examples)
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    console = Console()
    console.print(summary(pipeline, report), highlight=False, soft_wrap=True)
    for table in tables(pipeline, report)[: 2 if report.examples else 1]:
        needed = Console(width=10_000).measure(table).maximum
        Console(width=max(console.width, needed)).print(table)
    if report.checked == 0:
        off = pipeline.monitoring.skew.sample_rate == 0
        why = (
            "the spec's monitoring.skew.sample_rate is 0 (the check is off)"
            if off
            else "no sampled prediction has got its label yet"
        )
        err.print(
            f"nothing checked yet: {why}. The check runs in the learning worker on labelled"
            f" predictions: set monitoring.skew.sample_rate, run `streamscore worker --spec"
            f" {spec}` and send traffic with labels",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def health(
    spec: SpecOption,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Also write health.md and PNG plots (PSI per column and of the score over the"
            " windows) into this folder (needs matplotlib: the 'health' extra).",
            show_default=False,
        ),
    ] = None,
    windows: Annotated[int, typer.Option(min=1, help="Latest windows shown per table.")] = 6,
) -> None:
    """The latest monitoring windows (drift per column and of the score, any other section
    they carry) and the features' freshness, read from the topics a worker wrote."""
    from streams.cli.health import read_health, tables, write
    from streams.runtime.connections import KafkaConnection
    from streams.runtime.reach import missing_topics

    settings = load_settings()
    pipeline = _spec(spec)
    try:
        if asyncio.run(missing_topics(settings, [pipeline.monitoring_topic])):
            _say_error(
                f"health: no topic {pipeline.monitoring_topic} on"
                f" {settings.kafka_bootstrap_servers}: no worker has run this spec there yet."
                f" Start `streamscore worker --spec {spec}` and send traffic (`streamscore"
                f" produce --spec {spec}`), or check STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS"
            )
            raise typer.Exit(1)
        report = read_health(pipeline, KafkaConnection.from_settings(settings))
        written = write(pipeline, report, windows, out) if out is not None else []
    except StreamscoreError as exc:
        raise _fail(exc) from exc
    console = Console()
    for table in tables(report, windows):
        needed = Console(width=10_000).measure(table).maximum
        Console(width=max(console.width, needed)).print(table)
    if not report.models:
        size = pipeline.monitoring.window.describe()
        err.print(
            f"no drift window on {pipeline.monitoring_topic} yet: a worker writes one per"
            f" {size} scored (monitoring.window)",
            highlight=False,
            soft_wrap=True,
        )
    for path in written:
        err.print(f"wrote {path}", highlight=False, soft_wrap=True)


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

    from streams.cli.replay import OUTCOMES, REPLAYED, parse_since
    from streams.cli.replay_run import build_selector, replay
    from streams.runtime.reach import check_kafka, check_redis

    settings = load_settings()
    pipeline = _spec(spec)
    try:
        asyncio.run(check_kafka(settings))
        check_redis(settings)  # the replay log: which ids were already resent
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
def validate(spec: SpecOption) -> None:
    """Check the spec, its Feast repo (refs, service), its models (exist, load, fit the
    spec's inputs) and the settings, with no broker or Redis; non-zero exit on a failure."""
    from streams.cli.validate import validate as run_checks

    checks = run_checks(spec)
    for check in checks:
        print(one_line(check.line()))
    failed = sum(not check.ok for check in checks)
    print(
        f"{failed} of {len(checks)} checks failed" if failed else f"all {len(checks)} checks passed"
    )
    raise typer.Exit(1 if failed else 0)


@app.command()
def servers() -> None:
    """Run the embedded Kafka broker and Redis in the foreground (Ctrl-C stops both).

    Prints, as `export` lines, every setting a worker or command needs to use them."""
    from streams.runtime.brokers import choose_broker
    from streams.runtime.embedded import EmbeddedRedis
    from streams.runtime.processes import settings_env

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
