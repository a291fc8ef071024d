"""The two reference workers the real pipeline is compared with, run as their own processes.

    python -m load_tests.baselines passthrough --spec SPEC
    python -m load_tests.baselines naive --spec SPEC

Both read the same ``STREAMSCORE_*`` settings as ``streamscore worker``, build the Faust app
with ``streams.runtime.app.create_app`` (same transport, consumer group, fetch wait, producer) and
serve the same ``/metrics`` readiness gauge, so the run starts, waits for and stops them
exactly like the real worker.

- **passthrough**: the real agent's machinery without its work: the same micro-batches
  (``streams.scoring.batching``) of the spec's size and wait, each input's bytes published
  unchanged to the output topic through ``streams.scoring.publish.KafkaPublisher``, inputs acked
  after delivery. The ceiling of what Faust + Kafka allow on this machine.
- **naive**: what one writes without batching: for each event, validate it, one Feast
  ``get_online_features`` call, one ONNX ``session.run`` (``OnnxScorer`` on one row), one
  awaited ``topic.send`` (the idiomatic Faust loop; it awaits the hand-over to the producer,
  not the broker's acknowledgement, which would be slower still).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import faust
import numpy as np

from features.store import open_store
from models.inputs import InputLayout
from models.registry import ModelRegistry
from models.scorer import OnnxScorer
from streams.errors import BadInput
from streams.metrics import Metrics, serve
from streams.runtime.app import create_app, create_worker, track_assignment
from streams.runtime.connections import RedisConnection
from streams.scoring.batching import micro_batches
from streams.scoring.publish import KafkaPublisher, app_producer
from streams.scoring.records import (
    InputMessage,
    OutputRecord,
    encode_dead_letter,
    encode_prediction,
    iso_utc,
)
from streams.scoring.validation import EventValidator
from streams.settings import Settings, load_settings
from streams.spec import PipelineSpec, feature_column, load_spec

log = logging.getLogger(__name__)


def _source(app: faust.App, spec: PipelineSpec) -> faust.TopicT:
    return app.topic(
        spec.input.topic, partitions=spec.input.partitions, key_type=bytes, value_type=bytes
    )


def _message(event: Any) -> InputMessage:
    m = event.message
    return InputMessage(m.key, m.value, m.topic, m.partition, m.offset, m.timestamp)


def attach_passthrough(app: faust.App, spec: PipelineSpec, metrics: Metrics) -> None:
    output = app.topic(spec.output.topic, partitions=spec.output_partitions)
    publisher = KafkaPublisher(app_producer(app))
    events_total = metrics.events.labels(spec.name)
    batch_size = metrics.batch_size.labels(spec.name)
    publish_seconds = metrics.stage_seconds.labels(spec.name, "publish")
    topic, max_size = spec.output.topic, spec.batch.max_size
    max_wait = spec.batch.max_wait_ms / 1000.0

    async def forward(stream: faust.StreamT[bytes]) -> None:
        await output.maybe_declare()
        async for events in micro_batches(stream, max_size, max_wait):
            messages = [_message(event) for event in events]
            events_total.inc(len(messages))
            batch_size.observe(len(messages))
            started = time.perf_counter()
            await publisher.publish([OutputRecord(topic, m.key, m.value or b"") for m in messages])
            publish_seconds.observe(time.perf_counter() - started)
            for event in events:
                await stream.ack(event)

    app.agent(_source(app, spec), name=f"{spec.name}.passthrough")(forward)


def attach_naive(app: faust.App, spec: PipelineSpec, settings: Settings, metrics: Metrics) -> None:
    store = open_store(spec.features.repo, RedisConnection.from_settings(settings))
    scorer = OnnxScorer.from_version(
        ModelRegistry(settings.model_dir).resolve(spec.model.name, spec.model.version)
    )
    scorer.require_columns(spec.input_columns())
    layout = InputLayout(spec)
    validator = EventValidator(spec.event, entity_field=spec.entity.field)
    refs = spec.features.refs
    features: Any = (
        store.get_feature_service(spec.features.service) if spec.features.service else list(refs)
    )
    columns = [feature_column(ref) for ref in refs]
    defaults = [float(spec.features.defaults[ref]) for ref in refs]
    join_key, threshold = spec.entity.join_key, spec.model.threshold
    output = app.topic(spec.output.topic, partitions=spec.output_partitions)
    dead_letters = app.topic(spec.output.dead_letter_topic, partitions=spec.output_partitions)
    events_total = metrics.events.labels(spec.name)

    async def score(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            events_total.inc()
            message = _message(event)
            try:
                parsed = validator.parse(message.value, message.timestamp)
            except BadInput as bad:
                value = encode_dead_letter(
                    message,
                    pipeline=spec.name,
                    stage=bad.stage,
                    reason=bad.reason,
                    error=bad.detail,
                    at=time.time(),
                )
                await dead_letters.send(key=message.key, value=value)
                continue
            row = store.get_online_features(
                features, [{join_key: parsed.entity_key}], full_feature_names=True
            ).to_dict()
            raw = [row[column][0] for column in columns]
            values = [d if v is None else float(v) for v, d in zip(raw, defaults, strict=True)]
            matrix = layout.build([parsed.fields], np.asarray([values], dtype=np.float64))
            score = float(scorer.score(matrix)[0])
            defaulted = [c for c, v in zip(columns, raw, strict=True) if v is None]
            value = encode_prediction(
                event_id=parsed.event_id,
                entity_key=parsed.entity_key,
                model=scorer.name,
                version=scorer.version,
                score=score,
                decision=None if threshold is None else score >= threshold,
                features=dict(zip(columns, values, strict=True)),
                defaulted=defaulted,
                entity_found=len(defaulted) < len(columns),
                event_time=iso_utc(parsed.time),
                scored_at=iso_utc(time.time()),
            )
            await output.send(key=parsed.event_id.encode(), value=value)

    app.agent(_source(app, spec), name=f"{spec.name}.naive")(score)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load_tests.baselines")
    parser.add_argument("mode", choices=("passthrough", "naive"))
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = load_settings()
    spec = load_spec(args.spec)
    metrics = Metrics()
    if settings.metrics_port:
        serve(metrics, settings.metrics_host, settings.metrics_port)
    app = create_app(spec, settings)
    if args.mode == "passthrough":
        attach_passthrough(app, spec, metrics)
    else:
        attach_naive(app, spec, settings, metrics)
    gauge = metrics.assigned_partitions.labels(spec.name)
    track_assignment(app, spec.input.topic, gauge, app.lifecycle.health)
    log.info(
        "baseline %s for %s: %s -> %s", args.mode, spec.name, spec.input.topic, spec.output.topic
    )
    create_worker(app, settings).execute_from_commandline()


if __name__ == "__main__":
    main()
