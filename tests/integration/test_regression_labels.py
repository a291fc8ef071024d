"""A regression pipeline end to end: scikit-learn's bundled diabetes dataset (442 patients,
no download) through Kafka and one real worker (role ``all``), with a registry primary, a
registry shadow and an online River regressor; then every patient's progression as a label.

Each model's reported MAE and RMSE (Prometheus and the learner's stored evaluation, which
``compare`` reads) must equal those recomputed from the scores it *published*; the online
model's final state must be River's ``learn_one`` loop over the same labels; labels that are
not finite numbers are dead letters of stage ``label``; no record carries a decision.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest

from models.online import OnlineLearner, build_river_model
from streams.cli.compare import labelled_evaluation
from streams.runtime.connections import RedisConnection
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from streams.scoring.prediction_store import Keys
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    read_to_end,
    wait_until,
)
from tests.specs.diabetes.patients import event, rows

pytestmark = pytest.mark.integration

DIABETES_SPEC = Path(__file__).resolve().parents[1] / "specs" / "diabetes" / "spec.yaml"
BAD_LABELS = [b'"high"', b"true", b"null"]  # not numbers: dead letters


@pytest.fixture(scope="module")
def diabetes(base_settings, tmp_path_factory: pytest.TempPathFactory) -> PreparedPipeline:
    return PreparedPipeline.prepare(
        DIABETES_SPEC, tmp_path_factory.mktemp("diabetes"), base_settings
    )


def mae_rmse(scores: list[float], labels: list[float]) -> tuple[float, float]:
    errors = np.asarray(scores) - np.asarray(labels)
    return float(np.mean(np.abs(errors))), float(np.sqrt(np.mean(errors**2)))


def test_regression_pipeline_reports_mae_rmse_of_what_each_model_published(
    diabetes: PreparedPipeline,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    base = diabetes.spec
    labels_spec = {**base.labels.model_dump(), "topic": f"{base.labels.topic}-{suffix}"}
    spec_path, spec = diabetes.variant(suffix, labels=labels_spec)
    settings = diabetes.settings.model_copy(update={"metrics_port": free_port()})
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(create_topics(settings, spec))
    data = rows()
    n = len(data)
    models = [spec.model.name, spec.shadows[0].name, spec.online.name]

    worker = WorkerProcess(spec_path, settings, diabetes.workdir / f"{suffix}.log")
    try:
        wait_until(lambda: (worker.probe("/ready") or (0,))[0] == 200, 60, [worker], "ready")
        now = datetime.now(UTC)
        events = [
            (f"patient-{i}".encode(), orjson.dumps(event(i, x, now)))
            for i, (x, _) in enumerate(data)
        ]
        asyncio.run(produce(bootstrap, spec.input.topic, events))
        # Every event's prediction and both shadows' scores before any label: none is an
        # orphan, and every model is evaluated on every label.
        asyncio.run(consume(bootstrap, [spec.output.topic], n, 60, worker))
        asyncio.run(consume(bootstrap, [spec.shadow_topic], 2 * n, 60, worker))
        labels = [
            (b"l", orjson.dumps({"event_id": f"patient-{i}", "label": y}))
            for i, (_, y) in enumerate(data)
        ]
        labels += [(b"bad", b'{"event_id": "patient-0", "label": ' + v + b"}") for v in BAD_LABELS]
        asyncio.run(produce(bootstrap, spec.labels.topic, labels))
        learned = {"pipeline": spec.name, "model": spec.online.name}
        wait_until(
            lambda: (
                (worker.metric("streamscore_online_learned_total", **learned) or 0) >= n
                and (worker.metric("streamscore_labels_total", outcome="invalid") or 0)
                >= len(BAD_LABELS)
            ),
            60,
            [worker],
            "every label learned and the bad ones dead-lettered",
        )
        reported = {
            model: {
                metric: worker.metric(
                    "streamscore_online_metric", pipeline=spec.name, model=model, metric=metric
                )
                for metric in ("mae", "rmse", "accuracy", "window_count")
            }
            for model in models
        }
        as_learned_mae = worker.metric(
            "streamscore_online_as_learned_metric", **learned, metric="mae"
        )
    finally:
        assert worker.stop() == 0, worker.log_tail()

    topics = {
        spec.output.topic: spec.output_partitions,
        spec.shadow_topic: spec.output_partitions,
        spec.output.dead_letter_topic: spec.output_partitions,
    }
    records = asyncio.run(read_to_end(bootstrap, topics))
    published: dict[str, dict[int, dict]] = {model: {} for model in models}
    for record in records[spec.output.topic] + records[spec.shadow_topic]:
        value = orjson.loads(record.value)
        published[value["model"]][int(value["event_id"].removeprefix("patient-"))] = value
    truth = [y for _, y in data]
    stored = labelled_evaluation(spec, RedisConnection.from_settings(settings))
    for model in models:
        assert sorted(published[model]) == list(range(n)), f"{model} scored every event once"
        assert not any("decision" in r for r in published[model].values()), model
        mae, rmse = mae_rmse([published[model][i]["score"] for i in range(n)], truth)
        assert reported[model]["mae"] == pytest.approx(mae, rel=1e-9), model
        assert reported[model]["rmse"] == pytest.approx(rmse, rel=1e-9), model
        assert reported[model]["window_count"] == n
        assert reported[model]["accuracy"] is None, f"{model}: no classification metric"
        assert stored[model]["mae"] == pytest.approx(mae, rel=1e-9)
        assert stored[model]["rmse"] == pytest.approx(rmse, rel=1e-9)
    for model in models[:2]:  # the registry models were trained on this very data
        assert reported[model]["mae"] < 60, f"{model}: MAE on a target of 25..346"
    # Every event was scored before any label: the online model served its untrained
    # intercept, and is reported on that, not on what it learned since ("as learned").
    assert {r["score"] for r in published[spec.online.name].values()} == {0.0}
    assert reported[spec.online.name]["mae"] == pytest.approx(float(np.mean(truth)))
    assert as_learned_mae is not None and as_learned_mae < reported[spec.online.name]["mae"]

    dead = [orjson.loads(r.value) for r in records[spec.output.dead_letter_topic]]
    assert [(d["stage"], d["reason"]) for d in dead] == [("label", "wrong_type")] * len(BAD_LABELS)
    assert all("(regression)" in d["error"] for d in dead)

    # The online model's final state is River's learn_one loop over the same labels.
    reference = build_river_model(spec.online)
    columns = spec.input_columns()
    for x, y in data:
        row = np.array([[x[c] for c in columns]], dtype=np.float32).astype(np.float64)[0]
        reference.learn_one(dict(zip(columns, row.tolist(), strict=True)), y)
    client = RedisConnection.from_settings(settings).client()
    try:
        snapshot = client.get(Keys(spec.name).snapshot)
    finally:
        client.close()
    learner = OnlineLearner.from_bytes(snapshot, spec=spec.online, columns=columns)
    assert learner.learned == n
    probe = np.array([[x[c] for c in columns] for x, _ in data[:20]], dtype=np.float32)
    expected = [
        reference.predict_one(dict(zip(columns, row, strict=True)))
        for row in probe.astype(np.float64).tolist()
    ]
    assert learner.predict_many(probe).tolist() == expected
