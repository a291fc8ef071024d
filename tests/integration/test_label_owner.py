"""One logical learner through real workers: of two learning workers on a labels topic of
three partitions only one learns, the other takes over when it stops, and a learner killed
with SIGKILL mid-stream loses and repeats nothing (its final state is River's own)."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from models.online import OnlineLearner, build_river_model
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from streams.scoring.prediction_store import Keys, PredictionStore
from streams.spec import PipelineSpec
from tests.integration.harness import PreparedPipeline, create_topics, produce, wait_until

pytestmark = pytest.mark.integration

Records = list[tuple[bytes, bytes]]


def labelled_variant(
    card_fraud: PreparedPipeline, n: int, partitions: int, seed: int
) -> tuple[str, object, PipelineSpec, np.ndarray, Records]:
    """A variant of the pipeline with its own labels topic of ``partitions`` (created),
    ``n`` predictions written straight into its prediction store (no scoring worker
    needed), and their labels: (suffix, spec path, spec, vectors, label records)."""
    suffix = uuid.uuid4().hex[:8]
    labels = {
        **card_fraud.spec.labels.model_dump(),
        "topic": f"labels-{suffix}",
        "partitions": partitions,
    }
    spec_path, spec = card_fraud.variant(suffix, labels=labels)
    asyncio.run(create_topics(card_fraud.settings, spec))
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, len(spec.input_columns()))).astype(np.float32)
    ids = [f"ev-{suffix}-{i}" for i in range(n)]

    async def store() -> None:
        client = aioredis.Redis.from_url(card_fraud.settings.redis_url)
        predictions = PredictionStore(client, spec.name, spec.labels.window_seconds)
        scores = rng.random(n).tolist()
        await predictions.put_predictions(ids, time.time(), spec.model.name, 1, scores, vectors)
        await client.aclose()

    asyncio.run(store())
    ys = (vectors[:, 0] + 0.5 * vectors[:, 1] > 0).astype(int).tolist()
    records = [
        (i.encode(), orjson.dumps({"event_id": i, "label": y}))
        for i, y in zip(ids, ys, strict=True)
    ]
    return suffix, spec_path, spec, vectors, records


def learning_worker(card_fraud: PreparedPipeline, spec_path, name: str) -> WorkerProcess:
    settings = card_fraud.settings.model_copy(
        update={"metrics_port": free_port(), "worker_role": "learning"}
    )
    return WorkerProcess(spec_path, settings, card_fraud.workdir / f"{name}.log")


def learned(worker: WorkerProcess, spec: PipelineSpec) -> float:
    return worker.metric("streamscore_online_learned_total", pipeline=spec.name) or 0.0


def duplicates(worker: WorkerProcess, spec: PipelineSpec) -> float:
    labels = {"pipeline": spec.name, "outcome": "duplicate"}
    return worker.metric("streamscore_labels_total", **labels) or 0.0


def ready(worker: WorkerProcess) -> bool:
    return (worker.probe("/ready") or (0,))[0] == 200


def checkpoint(settings, spec: PipelineSpec) -> OnlineLearner | None:
    snapshot = redis.Redis.from_url(settings.redis_url).get(Keys(spec.name).snapshot)
    return None if snapshot is None else OnlineLearner.from_bytes(snapshot)


def test_one_of_two_learning_workers_learns_and_the_other_takes_over_on_sigterm(
    card_fraud: PreparedPipeline,
) -> None:
    suffix, spec_path, spec, _, records = labelled_variant(card_fraud, 240, 3, seed=31)
    bootstrap = card_fraud.settings.kafka_bootstrap_servers
    first = learning_worker(card_fraud, spec_path, f"owner-{suffix}-1")
    second = learning_worker(card_fraud, spec_path, f"owner-{suffix}-2")
    workers = [first, second]
    try:
        # Both joined the labels group (ready); only one of them owns the three partitions.
        wait_until(lambda: ready(first) and ready(second), 60, workers, "both workers ready")
        owned = {
            w: w.metric("streamscore_assigned_partitions", pipeline=spec.name) for w in workers
        }
        assert sorted(owned.values()) == [0, 3], owned
        owner, other = sorted(workers, key=lambda w: -(owned[w] or 0))
        asyncio.run(produce(bootstrap, spec.labels.topic, records[:120]))
        wait_until(lambda: learned(owner, spec) >= 120, 60, workers, "the first 120 learned")
        assert learned(owner, spec) == 120 and learned(other, spec) == 0

        assert owner.stop() == 0, owner.log_tail()  # it commits what it learned, and leaves
        wait_until(
            lambda: other.metric("streamscore_assigned_partitions", pipeline=spec.name) == 3,
            60, [other], "the other worker to own the labels",
        )  # fmt: skip
        asyncio.run(produce(bootstrap, spec.labels.topic, records[120:]))
        wait_until(lambda: learned(other, spec) >= 120, 60, [other], "the other 120 learned")
        assert learned(other, spec) == 120 and duplicates(other, spec) == 0
    finally:
        for worker in workers:
            assert worker.stop() == 0, worker.log_tail()
    state = checkpoint(card_fraud.settings, spec)
    assert state is not None and state.learned == 240  # each label learned exactly once


def test_a_learner_killed_mid_stream_loses_and_repeats_nothing(
    card_fraud: PreparedPipeline,
) -> None:
    """One partition, so the learning order is the topic's: the final state equals River's
    ``learn_one`` loop over the labels in that order."""
    n = 400
    suffix, spec_path, spec, vectors, records = labelled_variant(card_fraud, n, 1, seed=32)
    bootstrap = card_fraud.settings.kafka_bootstrap_servers
    worker = learning_worker(card_fraud, spec_path, f"killed-{suffix}-1")
    try:
        wait_until(lambda: ready(worker), 60, [worker], "the learner ready")

        async def trickle() -> None:
            """Labels in small batches; SIGKILL once some are learned, then the rest."""
            for start in range(0, n, 10):
                await produce(bootstrap, spec.labels.topic, records[start : start + 10])
                if worker.running and learned(worker, spec) >= 60:
                    worker.process.kill()
                    worker.process.wait()
                await asyncio.sleep(0.02)

        asyncio.run(trickle())
        assert worker.process.returncode == -9, worker.log_tail()
        killed_at = checkpoint(card_fraud.settings, spec)
        assert killed_at is not None and killed_at.learned < n, "the kill came too late"
    finally:
        worker.stop()
    restarted = learning_worker(card_fraud, spec_path, f"killed-{suffix}-2")
    try:
        wait_until(
            lambda: (state := checkpoint(card_fraud.settings, spec)) is not None
            and state.learned >= n,
            90, [restarted], "every label learned after the restart",
        )  # fmt: skip
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    state = checkpoint(card_fraud.settings, spec)
    assert state is not None and state.learned == n  # nothing lost, nothing learned twice

    columns = spec.input_columns()
    direct = build_river_model(spec.online)
    for (_, value), vector in zip(records, vectors, strict=True):
        x = dict(zip(columns, vector.tolist(), strict=True))
        direct.learn_one(x, bool(orjson.loads(value)["label"]))
    held_out = np.random.default_rng(9).normal(size=(50, len(columns))).astype(np.float32)
    expected = [
        direct.predict_proba_one(dict(zip(columns, r.tolist(), strict=True)))[True]
        for r in held_out
    ]
    np.testing.assert_allclose(state.predict_many(held_out), expected, rtol=1e-9, atol=1e-12)


def test_labels_that_outrun_their_predictions_are_held_not_orphaned_and_survive_a_restart(
    card_fraud: PreparedPipeline,
) -> None:
    """Labels sent before their predictions are stored are held (and retried), not orphans;
    a stop while they are held commits no offset past them, so the next learner finds them;
    labels whose prediction never comes are orphans once the grace is over."""
    suffix = uuid.uuid4().hex[:8]
    labels = {
        **card_fraud.spec.labels.model_dump(),
        "topic": f"labels-{suffix}",
        "partitions": 2,
        "orphan_grace_seconds": 5.0,
    }
    spec_path, spec = card_fraud.variant(suffix, labels=labels)
    asyncio.run(create_topics(card_fraud.settings, spec))
    n, never = 40, 5
    rng = np.random.default_rng(33)
    vectors = rng.normal(size=(n, len(spec.input_columns()))).astype(np.float32)
    ids = [f"ev-{suffix}-{i}" for i in range(n)] + [f"never-{suffix}-{i}" for i in range(never)]
    records = [(i.encode(), orjson.dumps({"event_id": i, "label": 1})) for i in ids]
    held = {"pipeline": spec.name}
    orphans = {"pipeline": spec.name, "outcome": "orphan"}

    first = learning_worker(card_fraud, spec_path, f"held-{suffix}-1")
    try:
        wait_until(lambda: ready(first), 60, [first], "the learner ready")
        asyncio.run(
            produce(card_fraud.settings.kafka_bootstrap_servers, spec.labels.topic, records)
        )
        wait_until(
            lambda: first.metric("streamscore_labels_held", **held) == n + never,
            30, [first], "every label held",
        )  # fmt: skip
        assert (first.metric("streamscore_labels_total", **orphans) or 0) == 0
    finally:
        assert first.stop() == 0, first.log_tail()

    async def store() -> None:  # the predictions land, late
        client = aioredis.Redis.from_url(card_fraud.settings.redis_url)
        predictions = PredictionStore(client, spec.name, spec.labels.window_seconds)
        scores = rng.random(n).tolist()
        await predictions.put_predictions(ids[:n], time.time(), spec.model.name, 1, scores, vectors)
        await client.aclose()

    asyncio.run(store())
    second = learning_worker(card_fraud, spec_path, f"held-{suffix}-2")
    try:
        wait_until(lambda: learned(second, spec) >= n, 60, [second], "the held labels learned")
        wait_until(
            lambda: (second.metric("streamscore_labels_total", **orphans) or 0) >= never,
            30, [second], "the never-predicted labels orphaned after the grace",
        )  # fmt: skip
        assert second.metric("streamscore_labels_held", **held) == 0
        assert learned(second, spec) == n
    finally:
        assert second.stop() == 0, second.log_tail()
    state = checkpoint(card_fraud.settings, spec)
    assert state is not None and state.learned == n
