"""The producer's drift switch on a real worker: the live generator's events, with
`--drift amount=x3` from half a second in. The window after the switch shows the amount's
PSI above the alert threshold while every other column stays below warn, on the worker's
gauges, on the monitoring topic, in the demo's live summary (which reads that topic) and in
`streamscore health`'s report."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from streams.cli.drift_switch import DriftSwitch, parse_shifts
from streams.cli.health import read_health
from streams.cli.producer import EventProducer
from streams.cli.summary import LiveSummary
from streams.runtime.connections import KafkaConnection
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from tests.integration.harness import PreparedPipeline, create_topics, read_to_end

pytestmark = pytest.mark.integration

WINDOW = 2000  # events per drift window
RATE = 1000.0  # events per second
AFTER = 0.5  # seconds: the second window's events (from the 2,000th) all come after it


def test_produce_with_a_drift_switch_alerts_on_the_shifted_column_only(
    card_fraud: PreparedPipeline,
) -> None:
    spec_path, spec = card_fraud.variant(
        uuid.uuid4().hex[:8], monitoring={"window": {"events": WINDOW}}
    )
    settings = card_fraud.settings.model_copy(update={"metrics_port": free_port()})
    asyncio.run(create_topics(settings, spec))
    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")
    labels = {"pipeline": spec.name, "model": spec.model.name}
    alert = spec.monitoring.drift.alert

    def windows() -> float:
        return worker.metric("streamscore_drift_windows_total", **labels) or 0

    async def run() -> LiveSummary:
        kafka = KafkaConnection.from_settings(settings)
        switch = DriftSwitch(parse_shifts(spec.event, ["amount=x3"]), after=AFTER)
        producer = EventProducer(spec, kafka, rate=RATE, drift=switch)
        summary, stop = LiveSummary(spec, kafka), asyncio.Event()
        reading = asyncio.create_task(summary.run(stop))
        try:
            await producer.run(asyncio.Event(), count=2 * WINDOW)
            deadline = time.monotonic() + 60
            while await asyncio.to_thread(windows) < 2 or summary.drift_windows < 2:
                assert worker.running, worker.log_tail()
                assert time.monotonic() < deadline, f"windows {windows()}:\n{worker.log_tail()}"
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await reading
        return summary

    try:
        deadline = time.monotonic() + 90
        while not worker.assigned_partitions():
            assert worker.running and time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        summary = asyncio.run(run())
        gauge = worker.metric("streamscore_drift_psi", column="amount", **labels)
        # The live summary has read both drift records: they are on the topic.
        received = asyncio.run(
            read_to_end(settings.kafka_bootstrap_servers, {spec.monitoring_topic: 1})
        )
        health = read_health(spec, KafkaConnection.from_settings(settings))
    finally:
        worker.stop()

    documents = [orjson.loads(r.value) for r in received[spec.monitoring_topic]]
    records = [d for d in documents if d["kind"] == "drift"]  # (also: data quality records)
    assert [r["events"] for r in records] == [WINDOW, WINDOW]
    shifted = records[1]["columns"]
    assert shifted["amount"]["level"] == "alert" and shifted["amount"]["psi"] > alert, shifted
    assert gauge == pytest.approx(shifted["amount"]["psi"], abs=1e-5)
    others = {c: v["psi"] for c, v in shifted.items() if c != "amount"}
    # Measured: amount 1.19, every other column at most 0.014 (below warn, 0.1).
    assert len(others) == 8 and max(others.values()) < spec.monitoring.drift.warn, others
    # The live summary read the same window: the amount is its worst column, at 'alert'.
    headline = summary.drift[spec.model.name]
    assert (headline.column, headline.column_level) == ("amount", "alert"), headline
    assert headline.column_psi == pytest.approx(shifted["amount"]["psi"])
    # Every prediction says how old its features were: the freshness row has the view.
    assert "card_stats" in summary.freshness.text(), summary.freshness.text()
    # `streamscore health` reads the same tail of the topics.
    drift = health.models[spec.model.name]
    assert drift.psi["amount"] == [r["columns"]["amount"]["psi"] for r in records]
    assert drift.level(drift.psi["amount"][-1]) == "alert"
    assert health.predictions == 2 * WINDOW
    assert [v.view for v in health.freshness] == ["card_stats"]
