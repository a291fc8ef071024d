"""Drift on a real worker: training rows sent as events, then other training rows with one
column shifted. The shifted column's PSI gauge goes above the alert threshold while every
other column stays below the warn one, and the monitoring topic gets one record per window."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import orjson
import pandas as pd
import pytest

from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from tests.integration.harness import PreparedPipeline, consume, create_topics, produce

pytestmark = pytest.mark.integration

WINDOW = 2000  # events per drift window
SHIFTED = "amount"
EVENT_COLUMNS = ("merchant_category", "channel", "is_foreign")  # straight from the events


def events(frame: pd.DataFrame, fields: list[str], scale: float = 1.0) -> list[dict]:
    """Training rows as input events (time: now); ``scale`` multiplies the amount."""
    now = datetime.now(UTC).isoformat()
    rows = frame[fields].to_dict("records")
    for i, row in enumerate(rows):
        row["transaction_id"] = f"drift-{scale}-{i}"
        row["event_time"] = now
        row["is_foreign"] = bool(row["is_foreign"])
        row[SHIFTED] = min(float(row[SHIFTED]) * scale, 50_000.0)  # the spec's max
    return rows


def test_a_shifted_column_alerts_and_each_window_is_a_monitoring_record(
    card_fraud: PreparedPipeline,
) -> None:
    spec_path, spec = card_fraud.variant(
        uuid.uuid4().hex[:8], monitoring={"window": {"events": WINDOW}}
    )
    assert spec.training is not None
    settings = card_fraud.settings.model_copy(update={"metrics_port": free_port()})
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(create_topics(settings, spec))
    frame = pd.read_parquet(spec.training.dataset)
    fields = [name for name in spec.event.fields if name in frame.columns]
    like_training = events(frame.iloc[:WINDOW], fields)
    shifted = events(frame.iloc[WINDOW : 2 * WINDOW], fields, scale=3.0)

    def send(batch: list[dict]) -> None:
        records = [(e["transaction_id"].encode(), orjson.dumps(e)) for e in batch]
        asyncio.run(produce(bootstrap, spec.input.topic, records))

    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")
    labels = {"pipeline": spec.name, "model": spec.model.name}

    def psi(column: str) -> float | None:
        return worker.metric("streamscore_drift_psi", column=column, **labels)

    def wait_windows(count: int) -> None:
        deadline = time.monotonic() + 90
        while worker.metric("streamscore_drift_windows_total", **labels) != count:
            assert worker.running, worker.log_tail()
            assert time.monotonic() < deadline, f"no window {count}:\n{worker.log_tail()}"
            time.sleep(0.2)

    try:
        # Sent after the first window closed, so that no shifted event lands in it (the
        # worker's partitions are consumed in no particular order).
        send(like_training)
        wait_windows(1)
        first = {c: psi(c) for c in (SHIFTED, *EVENT_COLUMNS)}
        assert worker.metric("streamscore_drift_reference_available", **labels) == 1
        send(shifted)
        wait_windows(2)
        second = {c: psi(c) for c in (SHIFTED, *EVENT_COLUMNS)}
        # Each window also has its data quality record (kind "quality") on the same topic.
        received = asyncio.run(consume(bootstrap, [spec.monitoring_topic], 4, timeout=30))
    finally:
        worker.stop()

    assert all(value is not None and value < 0.1 for value in first.values()), first
    assert second[SHIFTED] is not None and second[SHIFTED] > spec.monitoring.drift.alert, second
    assert all(second[c] < spec.monitoring.drift.warn for c in EVENT_COLUMNS), second
    records = [orjson.loads(r.value) for r in received[spec.monitoring_topic]]
    records = [r for r in records if r["kind"] != "quality"]
    assert [(r["kind"], r["events"], r["model"]) for r in records] == [
        ("drift", WINDOW, spec.model.name)
    ] * 2
    assert records[1]["columns"][SHIFTED]["level"] == "alert"
    # The features come from the online store, not from the events: measured ~0.01 here.
    others = {c: v["psi"] for c, v in records[1]["columns"].items() if c != SHIFTED}
    assert len(others) == 8 and max(others.values()) < spec.monitoring.drift.warn, others
    assert records[1]["columns"][SHIFTED]["psi"] == pytest.approx(second[SHIFTED], abs=1e-5)
    assert records[0]["columns"][SHIFTED]["level"] == "ok"
    assert records[1]["window_start"] >= records[0]["window_end"]
