"""Shadows on the real broker, Redis, Feast and ONNX Runtime, with the scoring service run
in-process so tests can put a slow and a failing shadow next to a real one."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from features.reader import OnlineFeatureReader
from features.store import open_store
from models.registry import ModelRegistry
from models.scorer import OnnxScorer
from streams.cli.compare import compare_shadows
from streams.cli.generators import make_generator
from streams.metrics import Metrics
from streams.runtime.app import Shadows
from streams.runtime.connections import KafkaConnection, RedisConnection
from streams.scoring.pipeline import ScoringPipeline
from streams.scoring.prediction_store import PredictionStore
from streams.scoring.publish import KafkaPublisher, OwnProducer
from streams.scoring.records import InputMessage, iso_utc
from streams.scoring.service import ScoringService
from streams.scoring.validation import parse_timestamp
from streams.shadows.shadow import ShadowRunner
from streams.spec import PipelineSpec
from tests.integration.harness import PreparedPipeline, consume, create_topics

pytestmark = pytest.mark.integration


class SleepyShadow:
    """Ten times slower than the primary (and then some): it sleeps in its own thread."""

    name, version = "sleepy", 1

    def __init__(self, inner: OnnxScorer, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def score(self, matrix):
        time.sleep(self.seconds)
        return self.inner.score(matrix)


class FailingShadow:
    name, version = "failing", 1

    def score(self, matrix):
        raise RuntimeError("this shadow always fails")


def messages_for(spec, n: int, topic: str) -> list[InputMessage]:
    generator = make_generator(spec, seed=3)
    now = datetime.now(UTC)
    # A distinct event time each, so that a record carrying another event's time shows.
    events = [generator.next_event(now + timedelta(milliseconds=i)) for i in range(n)]
    return [
        InputMessage(e["transaction_id"].encode(), orjson.dumps(e), topic, 0, i, time.time())
        for i, e in enumerate(events)
    ]


async def primary_and_shadow(
    card_fraud: PreparedPipeline,
) -> tuple[PipelineSpec, OnnxScorer, ScoringPipeline, Metrics]:
    """A fresh variant of the pipeline (topics created), its primary pipeline and the
    spec's first shadow model."""
    _, spec = card_fraud.variant(uuid.uuid4().hex[:8])
    settings = card_fraud.settings
    await create_topics(settings, spec)
    registry = ModelRegistry(settings.model_dir)
    primary = OnnxScorer.from_version(registry.resolve(spec.model.name, spec.model.version))
    shadow_lr = OnnxScorer.from_version(registry.resolve(spec.shadows[0].name, "champion"))
    redis = RedisConnection.from_settings(settings)
    reader = OnlineFeatureReader(open_store(spec.features.repo, redis), spec)
    metrics = Metrics()
    return spec, shadow_lr, ScoringPipeline(spec, reader, primary, metrics), metrics


async def test_slow_and_failing_shadows_never_hold_up_the_primary(
    card_fraud: PreparedPipeline,
) -> None:
    spec, shadow_lr, pipeline, metrics = await primary_and_shadow(card_fraud)
    settings = card_fraud.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    client = aioredis.Redis.from_url(settings.redis_url)
    publisher = KafkaPublisher(lambda: producer)
    store = PredictionStore(client, spec.name, 600)
    batches = [messages_for(spec, 1000, spec.input.topic)[i : i + 100] for i in range(0, 1000, 100)]

    async def primary_seconds(shadow_models) -> tuple[list[float], list[ShadowRunner]]:
        runners = [
            ShadowRunner(
                model, pipeline=spec.name, topic=spec.shadow_topic, threshold=spec.model.threshold,
                queue_batches=2, publisher=publisher, store=store, metrics=metrics,
            )
            for model in shadow_models
        ]  # fmt: skip
        tasks = [asyncio.create_task(r.run()) for r in runners]
        service = ScoringService(pipeline, publisher, metrics, store=store, shadows=runners)
        durations = []
        for batch in batches:
            started = time.perf_counter()
            await service.handle(batch)
            durations.append(time.perf_counter() - started)
        async with asyncio.timeout(60):
            for runner in runners:
                await runner.drain()
        for task in tasks:
            task.cancel()
        service.close()
        return durations, runners

    try:
        alone, _ = await primary_seconds([])
        sleepy_seconds = 10 * max(float(np.median(alone)), 0.02)
        with_shadows, runners = await primary_seconds(
            [SleepyShadow(shadow_lr, sleepy_seconds), FailingShadow(), shadow_lr]
        )
        # Order of magnitude only (timing figures belong to the load tests): the primary
        # never waited for the sleepy shadow's ten-times-longer runs.
        assert float(np.median(with_shadows)) < sleepy_seconds / 2
        sleepy, failing, real = runners
        sample = metrics.registry.get_sample_value
        shed = sample(
            "streamscore_shadow_shed_events_total", {"pipeline": spec.name, "model": "sleepy"}
        )
        assert shed and shed > 0  # it fell behind and shed instead of back-pressuring
        assert failing.failed == 1000 and failing.scored == 0
        errors = sample(
            "streamscore_shadow_errors_total", {"pipeline": spec.name, "model": "failing"}
        )
        assert errors == 1000
        # Let the real shadow finish what it queued (queue of 2: it may have shed too).
        out = await consume(
            settings.kafka_bootstrap_servers,
            [spec.output.topic, spec.shadow_topic],
            count=2000 + real.scored,
            timeout=60,
        )
    finally:
        await producer.stop()
        await client.aclose()

    predictions = [orjson.loads(r.value) for r in out[spec.output.topic]]
    assert len(predictions) == 2000  # two full rounds of 1,000: the primary lost nothing
    shadow_records = [orjson.loads(r.value) for r in out[spec.shadow_topic]]
    real_records = [r for r in shadow_records if r["model"] == shadow_lr.name]
    assert real_records and not [r for r in shadow_records if r["model"] == "failing"]

    # Shadow outputs equal a direct run of the shadow model on the primary's exact vectors.
    by_event = {p["event_id"]: p for p in predictions}
    stored = await _stored_vectors(
        settings.redis_url, spec.name, [r["event_id"] for r in real_records]
    )
    direct = shadow_lr.score(np.stack([stored[r["event_id"]] for r in real_records]))
    np.testing.assert_allclose([r["score"] for r in real_records], direct, rtol=1e-6, atol=1e-7)
    for record in real_records:
        assert record["primary_score"] == pytest.approx(by_event[record["event_id"]]["score"])
        assert record["event_time"] == by_event[record["event_id"]]["event_time"]
    # Each record carries its own event's time, normalised to ISO UTC.
    sent_times = {
        event["transaction_id"]: iso_utc(parse_timestamp(event["event_time"]))
        for event in (orjson.loads(m.value) for batch in batches for m in batch)
    }
    assert all(p["event_time"] == sent_times[p["event_id"]] for p in predictions)

    # The compare report's figures are the same comparison, from the topics.
    comparison = compare_shadows(predictions, shadow_records)[shadow_lr.name]
    assert comparison.compared == len(real_records)
    decisions = [by_event[r["event_id"]]["decision"] == r["decision"] for r in real_records]
    assert comparison.agree == sum(decisions)


async def _stored_vectors(
    redis_url: str, pipeline: str, event_ids: list[str]
) -> dict[str, np.ndarray]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        found = await PredictionStore(client, pipeline, 600).get(event_ids, [])
    finally:
        await client.aclose()
    return {p.event_id: p.vector for p in found if p is not None}


async def test_stopping_the_shadows_flushes_their_producer_after_their_last_publish(
    card_fraud: PreparedPipeline,
) -> None:
    """The worker's shadows (``attach_shadows``) publish on their own producer. Stopping
    them with batches still queued neither fails nor hangs, and what they scored is on the
    topic. (That the runners are cancelled before the producer closes is by construction:
    a wrong order only shows when something publishes in between, which this cannot force.)"""
    spec, shadow_lr, pipeline, metrics = await primary_and_shadow(card_fraud)
    settings = card_fraud.settings
    own = OwnProducer(KafkaConnection.from_settings(settings), 1 << 20, client_id="test-shadows")
    # Slower than the primary, so that batches are still queued and in flight at stop.
    runner = ShadowRunner(
        SleepyShadow(shadow_lr, 0.02), pipeline=spec.name, topic=spec.shadow_topic,
        threshold=spec.model.threshold, queue_batches=64, publisher=KafkaPublisher(own),
        store=None, metrics=metrics,
    )  # fmt: skip
    shadows = Shadows([runner], own)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await shadows.start()
        service = ScoringService(
            pipeline, KafkaPublisher(lambda: producer), metrics, shadows=[runner]
        )
        messages = messages_for(spec, 3000, spec.input.topic)
        for i in range(0, len(messages), 100):
            await service.handle(messages[i : i + 100])
        await shadows.stop()  # with batches still queued for the shadow
    finally:
        await producer.stop()
    assert runner.failed == 0 and runner.scored > 0
    assert runner.scored < 3000  # stopped with work left: shadows are best-effort at stop
    out = await consume(settings.kafka_bootstrap_servers, [spec.shadow_topic], runner.scored, 60)
    # A batch cancelled mid-publish may still be flushed, uncounted: at least, not exactly.
    assert len(out[spec.shadow_topic]) >= runner.scored
