"""The label-free estimate and the realized accuracy on a real worker (scoring and learning
in one process): training rows sent as events, then their labels. Each drift window's
record carries its estimate, and once the labels are in, the realized accuracy and the
estimate minus it equal what the published predictions and the labels give."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
import pytest

from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from tests.integration.harness import PreparedPipeline, consume, create_topics, produce

pytestmark = pytest.mark.integration

WINDOW = 1000  # events per drift window
EVENTS = 2 * WINDOW
WEEK = 7 * 24 * 3600.0  # one window of prediction time holds the whole test's predictions


def test_estimate_per_window_and_realized_accuracy_once_labels_arrive(
    card_fraud: PreparedPipeline,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    assert card_fraud.spec.labels is not None and card_fraud.spec.training is not None
    labels_spec = {**card_fraud.spec.labels.model_dump(), "topic": f"labels-{suffix}"}
    monitoring = {
        "window": {"events": WINDOW},
        "performance": {"min_labels": EVENTS // 2, "bucket_seconds": WEEK},
    }
    spec_path, spec = card_fraud.variant(suffix, labels=labels_spec, monitoring=monitoring)
    assert spec.labels is not None and spec.training is not None
    settings = card_fraud.settings.model_copy(update={"metrics_port": free_port()})
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(create_topics(settings, spec))

    frame = pd.read_parquet(spec.training.dataset).iloc[:EVENTS]
    fields = [name for name in spec.event.fields if name in frame.columns]
    now = datetime.now(UTC).isoformat()
    events, truth = [], {}
    for i, row in enumerate(frame[fields].to_dict("records")):
        row.update(transaction_id=f"perf-{suffix}-{i}", event_time=now)
        row["is_foreign"] = bool(row["is_foreign"])
        events.append((row["transaction_id"].encode(), orjson.dumps(row)))
        truth[row["transaction_id"]] = bool(frame[spec.training.label].iloc[i])
    labels = [
        (key.encode(), orjson.dumps({"event_id": key, "label": y, "label_time": now}))
        for key, y in truth.items()
    ]

    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")
    primary = {"pipeline": spec.name, "model": spec.model.name}

    def wait_for(name: str, value: float, **labels: str) -> None:
        deadline = time.monotonic() + 90
        while worker.metric(name, **labels) != value:
            assert worker.running, worker.log_tail()
            assert time.monotonic() < deadline, f"{name} {labels} != {value}:\n{worker.log_tail()}"
            time.sleep(0.2)

    assert spec.online is not None  # it learns what the evaluation took in, then publishes
    try:
        asyncio.run(produce(bootstrap, spec.input.topic, events))
        wait_for("streamscore_drift_windows_total", 2, **primary)
        estimated = worker.metric("streamscore_estimated_accuracy", **primary)
        assert worker.metric("streamscore_realized_accuracy", **primary) is None  # no labels
        asyncio.run(produce(bootstrap, spec.labels.topic, labels))
        wait_for("streamscore_labels_total", EVENTS, pipeline=spec.name, outcome="joined")
        wait_for(
            "streamscore_online_learned_total", EVENTS, pipeline=spec.name, model=spec.online.name
        )
        realized = worker.metric("streamscore_realized_accuracy", **primary)
        difference = worker.metric("streamscore_estimated_minus_realized_accuracy", **primary)
        received = asyncio.run(
            consume(bootstrap, [spec.monitoring_topic, spec.output.topic], 2 * 2 + EVENTS, 30)
        )
    finally:
        worker.stop()

    # Each of the two windows closes with a drift record and a data-quality one.
    records = [orjson.loads(r.value) for r in received[spec.monitoring_topic]]
    records = [r for r in records if r["kind"] == "drift"]
    assert len(records) == 2 and all(0.5 <= r["estimated_accuracy"] <= 1 for r in records)
    assert estimated == records[-1]["estimated_accuracy"]  # the gauge: the last window's

    predictions = [orjson.loads(r.value) for r in received[spec.output.topic]]
    served = {p["event_id"]: p["score"] for p in predictions if p["model"] == spec.model.name}
    assert len(served) == EVENTS
    threshold = spec.model.threshold or 0.5
    scores = np.array([served[key] for key in truth])
    y = np.array(list(truth.values()))
    assert realized == pytest.approx(np.mean((scores >= threshold) == y), abs=1e-9)
    expected = np.where(scores >= threshold, scores, 1 - scores).mean()
    assert difference == pytest.approx(expected - realized, abs=1e-6)
    # The two windows' estimates, weighted alike, are the estimate over all the events.
    mean_estimate = np.mean([r["estimated_accuracy"] for r in records])
    assert mean_estimate == pytest.approx(expected, abs=1e-5)
