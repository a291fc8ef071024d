"""Delayed labels on a real Redis, with an injected clock: late, out-of-order, duplicated,
orphan and invalid labels, a learner that equals River trained directly, and no reader of
its checkpoint that would run a pickle planted in Redis."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

import streams.learning.learner
from models.evaluation import EvaluationStateError, RollingEvaluation
from models.online import OnlineLearner, SnapshotError, build_river_model
from streams.cli.compare import labelled_evaluation
from streams.learning.join import Label, LabelJoiner, joined_record
from streams.learning.learner import LearnerFenced, LearnerService, OnlineSnapshotModel
from streams.metrics import Metrics
from streams.runtime.connections import RedisConnection
from streams.scoring.prediction_store import Keys, PredictionStore
from streams.scoring.records import InputMessage
from tests.integration.harness import PreparedPipeline
from tests.planted import planted_pickle

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0
WINDOW = 60.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def label_message(offset: int, value: bytes) -> InputMessage:
    return InputMessage(None, value, "labels", 0, offset, T0)


def label(event_id: str, value: int | bool) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "label": value, "label_time": "2027-01-15T08:00:00Z"}
    )


@pytest.fixture
def spec(card_fraud: PreparedPipeline):
    labels = card_fraud.spec.labels.model_copy(update={"window_seconds": WINDOW})
    return card_fraud.spec.model_copy(
        update={"name": f"labels-{uuid.uuid4().hex[:8]}", "labels": labels}
    )


async def test_labels_join_to_what_was_predicted(spec, redis_client) -> None:
    width = len(spec.input_columns())
    vectors = np.random.default_rng(0).normal(size=(10, width)).astype(np.float32)
    ids = [f"e{i}" for i in range(10)]
    store = PredictionStore(redis_client, spec.name, WINDOW)
    await store.put_predictions(ids, T0, "fraud_gbt", 1, [i / 10 for i in range(10)], vectors)
    await store.put_shadow_scores("fraud_lr", ids[:5], [0.5] * 5)
    clock = Clock(T0 + 30)
    joiner = LabelJoiner(spec, store, Metrics(), clock=clock)

    outcome = await joiner.join(
        [
            label_message(0, label("e3", 1)),
            label_message(1, label("e1", False)),  # out of order
            label_message(2, label("e1", False)),  # duplicate: the learner skips it
            label_message(3, label("never-predicted", 1)),
            label_message(4, b'{"event_id": "e2", "label": "yes"}'),
            label_message(5, b"not json"),
        ]
    )
    assert outcome.counts == {"joined": 3, "late": 0, "orphan": 1, "invalid": 2}
    joined = outcome.joined
    assert [j["event_id"] for j in joined] == ["e3", "e1", "e1"]
    assert joined[0]["vector"].tolist() == vectors[3].tolist()
    assert joined[0]["scores"] == {"fraud_gbt": pytest.approx(0.3), "fraud_lr": 0.5}
    reasons = sorted(orjson.loads(d.value)["reason"] for d in outcome.dead_letters)
    assert reasons == ["not_json", "wrong_type"]

    clock.now = T0 + WINDOW + 5  # past the window, still inside the store's grace period
    late = await joiner.join([label_message(6, label("e5", 1))])
    assert late.counts["late"] == 1 and not late.joined  # late_policy: drop
    learn_late = LabelJoiner(
        spec.model_copy(update={"labels": spec.labels.model_copy(update={"late_policy": "learn"})}),
        store, Metrics(), clock=clock,
    )  # fmt: skip
    taken = await learn_late.join([label_message(7, label("e5", 1))])
    assert [record["late"] for record in taken.joined] == [True]


def joined_records(spec, n: int, seed: int) -> tuple[list[dict], np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    width = len(spec.input_columns())
    vectors = rng.normal(size=(n, width)).astype(np.float32)
    labels = (vectors[:, 0] + 0.5 * vectors[:, 1] > 0).astype(int).tolist()
    served = {"fraud_gbt": 0.5, spec.online.name: 0.25}  # what each model published
    records = [
        joined_record(Label(f"ev{seed}-{i}", y, T0), T0, False, v, served)
        for i, (v, y) in enumerate(zip(vectors, labels, strict=True))
    ]
    return records, vectors, labels


async def test_learner_equals_river_trained_directly_and_never_learns_twice(
    spec, redis_client
) -> None:
    records, vectors, labels = joined_records(spec, 300, seed=1)
    batches = [records[i : i + 64] for i in range(0, 300, 64)]
    batches[2] = batches[2] + batches[1][:10]  # duplicates inside the stream
    metrics = Metrics()
    learner = LearnerService(spec, redis_client, metrics, clock=Clock(T0))
    learned = [await learner.handle(batch) for batch in batches]
    assert sum(learned) == 300

    columns = spec.input_columns()
    direct = build_river_model(spec.online)
    for vector, y in zip(vectors, labels, strict=True):
        direct.learn_one(dict(zip(columns, vector.tolist(), strict=True)), bool(y))
    held_out = np.random.default_rng(9).normal(size=(50, len(columns))).astype(np.float32)
    expected = [
        direct.predict_proba_one(dict(zip(columns, r.tolist(), strict=True)))[True]
        for r in held_out
    ]
    snapshot = await redis_client.get(learner.keys.snapshot)
    restored = OnlineLearner.from_bytes(snapshot)
    np.testing.assert_allclose(restored.predict_many(held_out), expected, rtol=1e-9, atol=1e-12)
    assert restored.learned == 300

    # A restart resumes from the checkpoint; a replay of everything learns nothing new.
    restarted = LearnerService(spec, redis_client, Metrics(), clock=Clock(T0))
    assert [await restarted.handle(batch) for batch in batches] == [0] * len(batches)
    after = OnlineLearner.from_bytes(await redis_client.get(learner.keys.snapshot))
    assert after.learned == 300
    np.testing.assert_allclose(after.predict_many(held_out), expected, rtol=1e-9, atol=1e-12)
    # The first learner, still running somewhere (stalled, then woken), is fenced: its
    # checkpoint would overwrite the state the restarted one resumed from.
    more, _, _ = joined_records(spec, 5, seed=2)
    with pytest.raises(LearnerFenced, match="another learning worker claimed"):
        await learner.handle(more)
    assert OnlineLearner.from_bytes(await redis_client.get(learner.keys.snapshot)).learned == 300
    assert await restarted.handle(more) == 5
    duplicates = metrics.registry.get_sample_value(
        "streamscore_labels_total", {"pipeline": spec.name, "outcome": "duplicate"}
    )
    assert duplicates == 10
    online = {"pipeline": spec.name, "model": spec.online.name}
    auc = metrics.registry.get_sample_value(
        "streamscore_online_as_learned_metric", {**online, "metric": "roc_auc"}
    )
    assert auc is not None and auc > 0.8  # it learned the signal, progressively validated
    # The compared figure is the one from the scores it published (0.25: always "0").
    served = metrics.registry.get_sample_value(
        "streamscore_online_metric", {**online, "metric": "accuracy"}
    )
    window = labels[-1000:]
    assert served == pytest.approx(window.count(0) / len(window))


async def test_without_an_online_model_every_model_is_evaluated_on_what_it_served(
    spec, redis_client
) -> None:
    plain = spec.model_copy(update={"online": None})
    rng = np.random.default_rng(5)
    n, width = 200, len(plain.input_columns())
    labels = rng.integers(0, 2, size=n).tolist()
    primary = rng.random(n).tolist()  # what each model published, event by event
    shadow = rng.random(n).tolist()
    records = [
        joined_record(
            Label(f"plain-{i}", y, T0), T0, False, np.zeros(width, np.float32),
            {plain.model.name: p, plain.shadows[0].name: q},
        )
        for i, (y, p, q) in enumerate(zip(labels, primary, shadow, strict=True))
    ]  # fmt: skip
    metrics = Metrics()
    service = LearnerService(plain, redis_client, metrics, clock=Clock(T0))
    assert await service.handle(records[:120]) == 120
    assert await service.handle(records[100:]) == 80  # 20 replayed: evaluated once
    assert await LearnerService(plain, redis_client, Metrics()).handle(records) == 0

    threshold = plain.model.threshold if plain.model.threshold is not None else 0.5
    for model, served in ((plain.model.name, primary), (plain.shadows[0].name, shadow)):
        expected = np.mean([(s >= threshold) == y for s, y in zip(served, labels, strict=True)])
        reported = metrics.registry.get_sample_value(
            "streamscore_online_metric",
            {"pipeline": plain.name, "model": model, "metric": "accuracy"},
        )
        assert reported == pytest.approx(expected, abs=1e-12), model
    keys = Keys(plain.name)
    stored = RollingEvaluation.from_bytes(await redis_client.get(keys.evaluation)).snapshot()
    assert stored[plain.model.name]["count"] == n
    assert await redis_client.exists(keys.snapshot, keys.version) == 0  # nothing learned


async def test_join_coverage_counts_labels_of_predictions_whose_window_closed(
    spec, redis_client
) -> None:
    width = len(spec.input_columns())
    ids = [f"c{i}" for i in range(10)]
    store = PredictionStore(redis_client, spec.name, WINDOW)
    vectors = np.zeros((10, width), dtype=np.float32)
    await store.put_predictions(ids, T0, "fraud_gbt", 1, [0.1] * 10, vectors)
    records = [
        joined_record(Label(i, 1, T0), T0, False, vectors[0], {"fraud_gbt": 0.1}) for i in ids[:7]
    ]
    metrics = Metrics()
    early = LearnerService(spec, redis_client, metrics, clock=Clock(T0 + 1))
    await early.handle(records[:1])  # no prediction is older than the window yet
    assert (
        metrics.registry.get_sample_value(
            "streamscore_label_join_coverage_ratio", {"pipeline": spec.name}
        )
        is None
    )  # absent, not 0
    learner = LearnerService(spec, redis_client, metrics, clock=Clock(T0 + WINDOW + 5))
    await learner.handle(records)
    coverage = metrics.registry.get_sample_value(
        "streamscore_label_join_coverage_ratio", {"pipeline": spec.name}
    )
    assert coverage == pytest.approx(0.7)


async def test_a_pickle_planted_in_redis_runs_in_no_reader(
    spec,
    redis_client,
    redis_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever can write Redis plants a pickle in the snapshot and evaluation keys. The
    learner's restore, the online shadow's reload and compare all refuse it with a clear
    error, and none unpickles it (the payload would create the marker file)."""
    marker = tmp_path / "pwned"
    payload = planted_pickle(marker)
    keys = Keys(spec.name)
    await redis_client.mset({keys.snapshot: payload, keys.evaluation: payload, keys.version: 7})

    learner = LearnerService(spec, redis_client, Metrics(), clock=Clock(T0))
    with caplog.at_level(logging.WARNING, logger="streams.learning.learner"):
        await learner.load()
    assert "starting a new online model" in caplog.text
    assert "a pickle" in caplog.text and "never loaded" in caplog.text
    assert learner.learner is not None and learner.learner.learned == 0

    records, _, _ = joined_records(spec, 40, seed=3)
    good = LearnerService(spec, redis_client, Metrics(), clock=Clock(T0))
    await good.handle(records)  # a real checkpoint of the model...
    await redis_client.set(keys.evaluation, payload)  # ...with a planted evaluation
    caplog.clear()
    resumed = LearnerService(spec, redis_client, Metrics(), clock=Clock(T0))
    with caplog.at_level(logging.WARNING, logger="streams.learning.learner"):
        await resumed.load()
    assert "starting a new rolling evaluation" in caplog.text and "a pickle" in caplog.text
    assert resumed.learner is not None and resumed.learner.learned == 40
    assert resumed.evaluation.models == []

    monkeypatch.setattr(
        streams.learning.learner, "RELOAD_SECONDS", 0.0
    )  # the shadow checks every batch
    await redis_client.mset({keys.snapshot: payload, keys.version: 8})
    shadow = OnlineSnapshotModel(spec, RedisConnection(redis_url))
    try:
        columns = spec.input_columns()
        matrix = np.zeros((2, len(columns)), dtype=np.float32)
        with pytest.raises(SnapshotError, match="a pickle .* never loaded"):
            shadow.score(matrix)
        tree = spec.online.model_copy(update={"model": "hoeffding_tree"})
        await redis_client.set(keys.snapshot, OnlineLearner(tree, columns).to_bytes())
        with pytest.raises(SnapshotError, match="the spec now asks for"):  # the spec rules
            shadow.score(matrix)
        assert shadow.version == 0  # it kept the model it had
    finally:
        shadow.close()  # its checkpoint listener outlives the test's Redis otherwise

    with pytest.raises(EvaluationStateError, match="a pickle, never loaded"):
        labelled_evaluation(spec, RedisConnection(redis_url))
    assert not marker.exists()

    # The learner's next checkpoint replaces both keys with data every reader takes.
    more, _, _ = joined_records(spec, 10, seed=4)
    await resumed.handle(more)
    snapshot, evaluation = await redis_client.mget(keys.snapshot, keys.evaluation)
    assert OnlineLearner.from_bytes(snapshot).learned == 50
    assert RollingEvaluation.from_bytes(evaluation).snapshot()[spec.online.name]["count"] == 10
    assert labelled_evaluation(spec, RedisConnection(redis_url))[spec.online.name]["count"] == 10
    probe = np.random.default_rng(5).normal(size=(4, len(columns))).astype(np.float32)
    np.testing.assert_array_equal(shadow.score(probe), resumed.learner.predict_many(probe))
    assert shadow.version == resumed.learner.version > 0  # the shadow took the new snapshot
