"""Composition root of a worker process: settings + spec -> services -> Faust worker."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import sys
from collections.abc import Callable
from typing import Any

import faust

from features.offline import PointInTimeReader
from features.reader import OnlineFeatureReader
from features.store import open_store
from models.fitness import Serving
from models.registry import ModelRegistry
from models.scorer import OnnxScorer
from streams.actions.counter import ActionsCounter
from streams.actions.record import publish_actions
from streams.actions.rollback import GuardRunner, guard_for
from streams.errors import CannotListen, WorkerRoleError
from streams.learning.join import LabelJoiner
from streams.learning.label_consumer import LabelConsumer
from streams.learning.learner import LearnerService, OnlineSnapshotModel
from streams.learning.skew_check import SkewChecker
from streams.metrics import Metrics, serve
from streams.monitoring.drift import DriftMonitor, load_reference
from streams.monitoring.quality import QualityMonitor
from streams.monitoring.skew import SkewLog
from streams.runtime.app import (
    Progress,
    Shadows,
    attach_health_checks,
    attach_label_consumer,
    attach_scoring_agent,
    attach_shadows,
    create_app,
    create_lifecycle,
    create_worker,
    track_assignment,
)
from streams.runtime.connections import KafkaConnection, RedisConnection
from streams.runtime.health import Health, Verdict
from streams.runtime.lifecycle import Lifecycle
from streams.runtime.reach import check_kafka, check_redis
from streams.runtime.topics import declare_topics_in_time
from streams.runtime.transport import StreamscoreApp
from streams.scoring.canary import CANARY
from streams.scoring.limits import InputLimits
from streams.scoring.pipeline import ScoringPipeline
from streams.scoring.prediction_store import PredictionStore
from streams.scoring.privacy import Privacy
from streams.scoring.publish import KafkaPublisher, OwnProducer, app_producer
from streams.scoring.service import ScoringService
from streams.settings import Settings
from streams.shadows.challenger import ChallengerShadow, challenger_watch
from streams.shadows.model_follow import (
    AliasFollower,
    OptionalAliasWatch,
    WatchedChange,
    start_serving,
)
from streams.shadows.shadow import ShadowModel, ShadowRunner
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)

#: How often a worker checks whether the primary's alias moved (promote / rollback).
ALIAS_CHECK_SECONDS = 1.0


def build_worker(
    spec: PipelineSpec, settings: Settings, metrics: Metrics, lifecycle: Lifecycle
) -> faust.Worker:
    """Wire the Faust app around the services of the worker's role (``settings.worker_role``).

    Scoring and learning share nothing but Redis (the prediction store), so they can run in
    separate processes: the learner then never competes with scoring for the GIL.
    """
    role = settings.worker_role
    privacy = check_before_connecting(spec, settings)
    app = create_app(spec, settings, lifecycle)
    health = lifecycle.health
    publisher = KafkaPublisher(app_producer(app))
    client = RedisConnection.from_settings(settings).async_client()
    store = PredictionStore(client, spec.name, spec.labels.window_seconds) if spec.labels else None
    partitions = metrics.assigned_partitions.labels(spec.name)
    if role in ("all", "scoring"):
        _attach_scoring(app, spec, settings, metrics, publisher, store, privacy)
        track_assignment(app, spec.input.topic, partitions, health)
    if role in ("all", "learning") and store is not None:
        assert spec.labels is not None
        budget = settings.feature_store_retry_seconds  # a Redis outage shorter than this: waited
        joiner = LabelJoiner(
            spec, store, metrics, limits=InputLimits.from_settings(settings),
            retry_for_seconds=budget, privacy=privacy,
        )  # fmt: skip
        # Without an online model it still evaluates every model on the scores it served.
        learner = LearnerService(
            spec, client, metrics, retry_for_seconds=budget,
            guard=_guard_runner(spec, settings, metrics),
        )  # fmt: skip
        skew = _skew_checker(spec, settings, client, metrics)
        consumer = LabelConsumer(
            spec, settings, lifecycle, joiner, learner, partitions,
            report_joined=role == "learning", skew=skew,
        )  # fmt: skip
        attach_label_consumer(app, consumer)
        # The actions topic, counted where Prometheus scrapes (streams/actions/counter.py).
        app.add_dependency(ActionsCounter(spec, KafkaConnection.from_settings(settings), metrics))
    attach_health_checks(app, health, RedisConnection.from_settings(settings))
    return create_worker(app, settings)


def _guard_runner(spec: PipelineSpec, settings: Settings, metrics: Metrics) -> GuardRunner | None:
    """The learner's automatic rollback (``actions.guard``), or None when there is nothing
    to guard; its actions are recorded on the pipeline's actions topic."""
    guard = guard_for(spec)
    if guard is None:
        return None
    kafka = KafkaConnection.from_settings(settings)

    async def record(records: list[dict[str, Any]]) -> None:
        async with asyncio.timeout(settings.kafka_connect_timeout_seconds):
            await publish_actions(
                kafka, spec.actions_topic, records, settings.topic_replication_factor
            )

    return GuardRunner(spec, guard, ModelRegistry(settings.model_dir), record, metrics)


def _skew_checker(
    spec: PipelineSpec, settings: Settings, client: Any, metrics: Metrics
) -> SkewChecker | None:
    """The sampled online/offline skew check (``monitoring.skew``), or None when it is off.
    Its Feast store is opened on the first check, in the check's thread (~0.5 s)."""
    if not spec.monitoring.skew.enabled:
        return None
    redis = RedisConnection.from_settings(settings)
    reader = PointInTimeReader(lambda: open_store(spec.features.repo, redis), spec)
    record = SkewLog(client, spec.name, keep=spec.monitoring.skew.examples)
    return SkewChecker(spec, reader, record, metrics)


def check_before_connecting(spec: PipelineSpec, settings: Settings) -> Privacy:
    """What the spec and settings alone refuse (a role without work, privacy without a
    key): said before any server is asked, whether it answers or not."""
    if settings.worker_role == "learning" and spec.labels is None:
        msg = f"pipeline {spec.name!r} declares no labels: a learning worker has nothing to do"
        raise WorkerRoleError(msg)
    return Privacy.for_pipeline(spec, settings.privacy_hash_key)


def _attach_scoring(
    app: StreamscoreApp,
    spec: PipelineSpec,
    settings: Settings,
    metrics: Metrics,
    publisher: KafkaPublisher,
    store: PredictionStore | None,
    privacy: Privacy,
) -> None:
    """Load the models and the feature store; the scoring agent, its shadows, the alias
    watcher. A model whose alias points at a version that cannot serve starts on the newest
    earlier version of the alias that can (``streams.shadows.model_follow``)."""
    app.lifecycle.health.expect_model()
    registry = ModelRegistry(settings.model_dir)
    primary = start_serving(registry, spec, spec.model, metrics)
    scorer = primary.scorer
    metrics.model_info.labels(spec.name, "primary", scorer.name, str(scorer.version)).set(1)
    app.lifecycle.health.model_loaded(f"{scorer.name} v{scorer.version}")
    redis = RedisConnection.from_settings(settings)
    reader = OnlineFeatureReader(open_store(spec.features.repo, redis), spec)
    limits = InputLimits.from_settings(settings)
    pipeline = ScoringPipeline(
        spec,
        reader,
        scorer,
        metrics,
        limits=limits,
        retry_for_seconds=settings.feature_store_retry_seconds,
        privacy=privacy,
    )
    shadow_servings = [start_serving(registry, spec, shadow, metrics) for shadow in spec.shadows]
    shadow_models: list[ShadowModel] = [serving.scorer for serving in shadow_servings]
    if spec.online is not None:
        shadow_models.append(OnlineSnapshotModel(spec, redis, metrics))
    # Shadows publish on a connection of their own (see OwnProducer): never ahead of the
    # primary's next publish in aiokafka's one-request-at-a-time queue.
    shadow_producer = OwnProducer(
        KafkaConnection.from_settings(settings),
        settings.kafka_producer_max_batch_bytes,
        client_id=f"{app.conf.id}-shadows",
    )
    shadow_publisher = KafkaPublisher(shadow_producer)

    def runner_for(model: ShadowModel) -> ShadowRunner:
        return ShadowRunner(
            model,
            pipeline=spec.name,
            topic=spec.shadow_topic,
            threshold=spec.model.threshold,
            task=spec.task,
            queue_batches=spec.batch.shadow_queue_batches,
            publisher=shadow_publisher,
            store=store,
            metrics=metrics,
        )

    shadows = [runner_for(model) for model in shadow_models]
    for shadow in shadows:
        version = str(shadow.model.version)
        metrics.model_info.labels(spec.name, "shadow", shadow.model.name, version).set(1)
    running = attach_shadows(app, shadows, shadow_producer, more=spec.challenger_shadow is not None)
    drift = drift_monitor(spec, metrics, registry, scorer.name, scorer.version)
    monitored = spec.monitoring.enabled and spec.monitoring.quality
    quality = QualityMonitor(spec, metrics) if monitored else None
    service = ScoringService(
        pipeline, publisher, metrics, store=store, shadows=shadows, drift=drift, quality=quality
    )
    attach_scoring_agent(app, spec, service, Progress(spec, metrics))
    _watch_primary_alias(app, spec, registry, primary, pipeline, metrics, drift)
    _watch_canary(app, spec, registry, pipeline, metrics)
    _watch_shadows(app, spec, registry, shadow_servings, shadows, metrics)
    if running is not None and spec.challenger_shadow is not None:
        _watch_challenger(app, spec, registry, service, running, runner_for, metrics)
    log.info(
        "pipeline %s: %s -> %s (model %s v%s, %d shadows, batch <= %d events / %.1f ms)",
        spec.name, spec.input.topic, spec.output.topic, scorer.name, scorer.version,
        len(shadows), spec.batch.max_size, spec.batch.max_wait_ms,
    )  # fmt: skip


def drift_monitor(
    spec: PipelineSpec, metrics: Metrics, registry: ModelRegistry, model: str, version: int
) -> DriftMonitor | None:
    """The primary's drift monitor with the serving version's reference registered; None
    when the spec turns monitoring off (``monitoring.enabled: false``)."""
    if not spec.monitoring.enabled:
        return None
    drift = DriftMonitor(spec, metrics)
    drift.use(model, version, load_reference(registry, model, version))
    return drift


def _watch_primary_alias(
    app: faust.App,
    spec: PipelineSpec,
    registry: ModelRegistry,
    primary: Serving,
    pipeline: ScoringPipeline,
    metrics: Metrics,
    drift: DriftMonitor | None,
) -> None:
    """Swap the primary model between batches when its alias moves to a version that loads
    and fits; no restart, no event lost (batches in flight finish with the model they
    started with). A version that does not is refused and the current one keeps serving.
    The new version's reference profile is given to the drift monitor before it serves."""
    if primary.alias is None:
        return  # pinned to a version number: nothing to follow
    follower = AliasFollower(registry, spec, primary, metrics)

    def check() -> OnnxScorer | None:
        new = follower.check()
        if new is not None and drift is not None:
            drift.use(new.name, new.version, load_reference(registry, new.name, new.version))
        return new

    @app.timer(interval=ALIAS_CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def follow_alias() -> None:
        new = await asyncio.to_thread(check)
        if new is not None:
            pipeline.swap_scorer(new)


def _watch_canary(
    app: faust.App,
    spec: PipelineSpec,
    registry: ModelRegistry,
    pipeline: ScoringPipeline,
    metrics: Metrics,
) -> None:
    """Serve the canary's share with the version its alias names, from start if it is set
    and as it appears, moves or is removed (a rollback): between batches, like the
    primary's swaps."""
    canary = spec.model.canary
    if canary is None:
        return
    watch = OptionalAliasWatch(registry, spec, metrics, canary.version, CANARY)
    m_version = metrics.canary_version.labels(spec.name, spec.model.name)
    m_info = metrics.model_info

    def swap(change: WatchedChange | None) -> None:
        if change is None:
            return
        old, new = pipeline.canary, change.scorer
        if old is not None:
            m_info.remove(spec.name, CANARY, old.name, str(old.version))
        if new is not None:
            m_info.labels(spec.name, CANARY, new.name, str(new.version)).set(1)
        pipeline.swap_canary(new)
        m_version.set(0 if new is None else new.version)

    m_version.set(0)
    metrics.canary_predictions.labels(spec.name, spec.model.name)  # a series from the start
    metrics.canary_errors.labels(spec.name, spec.model.name)
    swap(watch.check())  # serving from the first batch if the alias is set

    @app.timer(interval=ALIAS_CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def follow_canary() -> None:
        swap(await asyncio.to_thread(watch.check))


def _watch_shadows(
    app: faust.App,
    spec: PipelineSpec,
    registry: ModelRegistry,
    servings: list[Serving],
    shadows: list[ShadowRunner],
    metrics: Metrics,
) -> None:
    """Shadows follow their aliases as the primary does (``servings`` and the first
    ``shadows`` are the spec's shadows, in order); the online model's exported version
    follows the snapshots it reloads."""
    followers = [
        (runner, AliasFollower(registry, spec, serving, metrics, ref=ref, role="shadow"))
        for ref, serving, runner in zip(spec.shadows, servings, shadows, strict=False)
        if serving.alias is not None
    ]
    online = shadows[len(spec.shadows) :]
    exported = {runner.model.name: str(runner.model.version) for runner in online}
    if not followers and not online:
        return

    @app.timer(interval=ALIAS_CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def follow_shadows() -> None:
        for runner, follower in followers:
            new = await asyncio.to_thread(follower.check)
            if new is not None:
                runner.swap_model(new)
        for runner in online:
            name, version = runner.model.name, str(runner.model.version)
            if version != exported[name]:
                metrics.model_info.remove(spec.name, "shadow", name, exported[name])
                metrics.model_info.labels(spec.name, "shadow", name, version).set(1)
                exported[name] = version


def _watch_challenger(
    app: faust.App,
    spec: PipelineSpec,
    registry: ModelRegistry,
    service: ScoringService,
    running: Shadows,
    runner_for: Callable[[ShadowModel], ShadowRunner],
    metrics: Metrics,
) -> None:
    """Shadow the primary's ``challenger`` alias while it is set (``streams.shadows.challenger``):
    started, swapped and stopped between batches as the alias moves, without a restart."""
    watch = challenger_watch(registry, spec, metrics)

    def start(runner: ShadowRunner) -> None:
        running.add(runner)
        service.shadows.append(runner)

    def stop(runner: ShadowRunner) -> None:
        service.shadows.remove(runner)
        running.remove(runner)

    challenger = ChallengerShadow(spec, metrics, runner_for, start, stop)

    @app.timer(interval=ALIAS_CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def follow_challenger() -> None:
        change = await asyncio.to_thread(watch.check)
        if change is not None:
            challenger.apply(change)


#: Python's default (5 ms) makes the event loop wait behind a busy shadow thread for that
#: long whenever it needs the GIL back; measured here, a 40-row ONNX run went from 0.06 ms to
#: 5.4 ms next to a busy thread, and 0.74 ms with this interval.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005


def run_worker(spec: PipelineSpec, settings: Settings) -> None:
    """Run until SIGINT/SIGTERM or a failed batch; Faust stops the agents, commits acked
    offsets and exits, within ``settings.shutdown_timeout_seconds`` (``streams.runtime.lifecycle``).
    Raises SystemExit with the lifecycle's status when it is not 0."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    metrics = Metrics()
    health = Health(settings.batch_timeout_seconds)
    lifecycle = create_lifecycle(spec, settings, health)
    check_before_connecting(spec, settings)
    if settings.metrics_port:
        probes = {
            "/ready": lambda: _answer(health.readiness()),
            "/live": lambda: _answer(health.liveness()),
        }
        _serve_metrics(metrics, settings, probes)
    # Both servers answer before anything is built on them: a wrong address ends the start
    # in one line within the connect timeout, not in a traceback minutes later.
    check_redis(settings)
    asyncio.run(check_kafka(settings))
    worker = build_worker(spec, settings, metrics, lifecycle)
    # The spec's topics with the spec's partitions, before Faust subscribes to any of them.
    asyncio.run(declare_topics_in_time(spec, settings))
    freeze_startup_heap()
    try:
        worker.execute_from_commandline()  # raises SystemExit: 0, or 1 if Faust crashed
    except SystemExit as exit_:
        lifecycle.exiting()  # no thread stuck in a client call may hold the exit up
        status = lifecycle.exit_code or exit_.code
        raise SystemExit(status) from None


def _serve_metrics(metrics: Metrics, settings: Settings, probes: dict[str, Any]) -> None:
    host, port = settings.metrics_host, settings.metrics_port
    try:
        serve(metrics, host, port, probes)
    except OSError as exc:
        taken = exc.errno == errno.EADDRINUSE
        why = "is in use (another worker on this host?)" if taken else f"fails: {exc.strerror}"
        msg = (
            f"metrics endpoint {host}:{port} {why}: set STREAMSCORE_METRICS_PORT to a free port"
            " (0 serves no /metrics)" + ("" if taken else " or STREAMSCORE_METRICS_HOST")
        )
        raise CannotListen(msg) from exc


def _answer(verdict: Verdict) -> tuple[bool, dict[str, Any]]:
    return verdict.ok, verdict.body()


def freeze_startup_heap() -> None:
    """Keep Python's full garbage collections off what the worker loaded before it runs.

    A built worker holds ~285,000 GC-tracked objects, nearly all from start-up (Feast,
    protobuf descriptors, models, Faust), and a full collection scans them all: at 2,000
    events/s one came about every 20 s and held the event loop ~180 ms, a p99 spike for
    every batch in flight (measured with ``gc.callbacks``; none ran in the same run after
    the freeze). ``gc.freeze`` moves them to the permanent generation, so collections scan
    only what was created since; reference counting still frees them.
    """
    gc.collect()
    gc.freeze()
