"""Composition root of a worker process: settings + spec -> services -> Faust worker."""

from __future__ import annotations

import logging

import faust

from features.reader import OnlineFeatureReader
from features.store import open_store
from models.registry import ModelRegistry
from models.scorer import OnnxScorer
from streams.app import attach_scoring_agent, create_app, track_assignment
from streams.metrics import Metrics, serve
from streams.pipeline import ScoringPipeline
from streams.publish import KafkaPublisher
from streams.service import ScoringService
from streams.settings import Settings
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)


def build_worker(spec: PipelineSpec, settings: Settings, metrics: Metrics) -> faust.Worker:
    """Load the model and feature store, then wire the Faust app around the services."""
    model = ModelRegistry(settings.model_dir).resolve(spec.model.name, spec.model.version)
    scorer = OnnxScorer.from_version(model)
    scorer.require_columns(spec.input_columns())  # a spec/model mismatch fails at start-up
    metrics.model_info.labels(spec.name, "primary", scorer.name, str(scorer.version)).set(1)
    reader = OnlineFeatureReader(open_store(spec.features.repo, settings.redis_url), spec)
    pipeline = ScoringPipeline(spec, reader, scorer, metrics)

    app = create_app(spec, settings)
    service = ScoringService(pipeline, KafkaPublisher(app.producer), metrics)
    attach_scoring_agent(app, spec, service)
    track_assignment(app, spec, metrics.assigned_partitions.labels(spec.name))
    log.info(
        "pipeline %s: %s -> %s (model %s v%s, batch <= %d events / %.1f ms)",
        spec.name, spec.input.topic, spec.output.topic, scorer.name, scorer.version,
        spec.batch.max_size, spec.batch.max_wait_ms,
    )  # fmt: skip
    return faust.Worker(app, loglevel=settings.log_level, quiet=True)


def run_worker(spec: PipelineSpec, settings: Settings) -> None:
    """Run until SIGINT/SIGTERM; Faust stops the agent, commits acked offsets and exits."""
    metrics = Metrics()
    if settings.metrics_port:
        serve(metrics, settings.metrics_host, settings.metrics_port)
    worker = build_worker(spec, settings, metrics)
    worker.execute_from_commandline()
