"""monitoring.slices through a real worker, and the learner's slice evaluations on a real
Redis: a slice's degradation (its scores shifted, its labels flipped) shows in that slice
value only."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
import pytest

from streams.learning.join import LabelJoiner
from streams.learning.learner import LearnerService
from streams.learning.slice_evaluation import SlicedEvaluation
from streams.metrics import Metrics
from streams.monitoring.slices import SliceLayout
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from streams.scoring.prediction_store import Keys, PredictionStore
from streams.scoring.records import InputMessage
from tests.integration.harness import PreparedPipeline, consume, create_topics, produce

pytestmark = pytest.mark.integration

CHANNELS = ("chip", "contactless", "swipe", "online")
DEGRADED = "online"
WINDOW = 2000  # events per drift window (and labels): swipe (8%) still has ~160 in one,
# and no channel passes the 1,000-label window of a slice evaluation.


def events(frame: pd.DataFrame, fields: list[str], tag: str, shift: bool = False) -> list[dict]:
    """Training rows as input events; with ``shift`` the degraded channel's amounts x3."""
    now = datetime.now(UTC).isoformat()
    rows = frame[fields].to_dict("records")
    for i, row in enumerate(rows):
        row["transaction_id"] = f"slices-{tag}-{i}"
        row["event_time"] = now
        row["is_foreign"] = bool(row["is_foreign"])
        if shift and row["channel"] == DEGRADED:
            row["amount"] = min(float(row["amount"]) * 3, 50_000.0)  # the spec's max
    return rows


def test_a_degraded_channel_shows_in_its_own_slice_only(card_fraud: PreparedPipeline) -> None:
    suffix = uuid.uuid4().hex[:8]
    labels_spec = {**card_fraud.spec.labels.model_dump(), "topic": f"labels-{suffix}"}
    monitoring = {"window": {"events": WINDOW}, "slices": ["channel", "is_foreign"]}
    spec_path, spec = card_fraud.variant(suffix, labels=labels_spec, monitoring=monitoring)
    assert spec.training is not None and spec.labels is not None
    settings = card_fraud.settings.model_copy(update={"metrics_port": free_port()})
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(create_topics(settings, spec))
    frame = pd.read_parquet(spec.training.dataset)
    fields = [name for name in spec.event.fields if name in frame.columns]
    first = events(frame.iloc[:WINDOW], fields, "a")
    # The same rows again, the degraded channel's shifted: the other channels' events score
    # exactly as before (same rows, same online features), so their PSI must not move.
    second = events(frame.iloc[:WINDOW], fields, "b", shift=True)
    truth = frame["is_fraud"].iloc[:WINDOW].astype(int).tolist()
    # The degraded channel's labels are flipped: its served accuracy collapses.
    flipped = [
        1 - y if event["channel"] == DEGRADED else y for event, y in zip(first, truth, strict=True)
    ]

    def send(topic: str, records: list[dict], key: str) -> None:
        encoded = [(str(r[key]).encode(), orjson.dumps(r)) for r in records]
        asyncio.run(produce(bootstrap, topic, encoded))

    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")
    model = {"pipeline": spec.name, "model": spec.model.name}

    def wait(condition, what: str) -> None:
        deadline = time.monotonic() + 90
        while not condition():
            assert worker.running, worker.log_tail()
            assert time.monotonic() < deadline, f"no {what}:\n{worker.log_tail()}"
            time.sleep(0.2)

    def windows() -> float | None:
        return worker.metric("streamscore_drift_windows_total", **model)

    def psi() -> dict[str, float | None]:
        return {
            value: worker.metric(
                "streamscore_slice_score_psi", slice="channel", value=value, **model
            )
            for value in CHANNELS
        }

    def sliced(metric: str) -> dict[str, float | None]:
        return {
            value: worker.metric(
                "streamscore_slice_online_metric", slice="channel", value=value,
                metric=metric, **model,
            )
            for value in CHANNELS
        }  # fmt: skip

    try:
        send(spec.input.topic, first, "transaction_id")
        wait(lambda: windows() == 1, "first drift window")
        before = psi()
        send(spec.input.topic, second, "transaction_id")
        wait(lambda: windows() == 2, "second drift window")
        after = psi()
        label_records = [
            {"event_id": e["transaction_id"], "label": y}
            for e, y in zip(first, flipped, strict=True)
        ]
        send(spec.labels.topic, label_records, "event_id")
        wait(
            lambda: sum(v or 0 for v in sliced("window_count").values()) == WINDOW,
            f"{WINDOW} labels in the channel slices",
        )
        accuracy = sliced("accuracy")
        overall = worker.metric("streamscore_online_metric", metric="accuracy", **model)
        predictions = asyncio.run(consume(bootstrap, [spec.output.topic], 2 * WINDOW, 30))
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # Drift: the shifted channel's score PSI jumps; the others do not move. Against the whole
    # reference a channel can sit far off from the start (swipe, mostly fraud: ~2.6 here).
    assert all(v is not None for v in (*before.values(), *after.values())), (before, after)
    assert after[DEGRADED] - before[DEGRADED] > spec.monitoring.drift.alert, (before, after)
    for value in CHANNELS:
        if value != DEGRADED:
            assert after[value] == pytest.approx(before[value], abs=1e-6), (value, before, after)

    # Labels: each channel's served accuracy is exactly that of its own events' decisions
    # against the labels sent, so only the degraded channel's collapses.
    decisions = {}
    for record in predictions[spec.output.topic]:
        value = orjson.loads(record.value)
        decisions[value["event_id"]] = value["decision"]
    expected = {}
    for value in CHANNELS:
        pairs = [
            (decisions[e["transaction_id"]], y)
            for e, y in zip(first, flipped, strict=True)
            if e["channel"] == value
        ]
        expected[value] = np.mean([bool(d) == bool(y) for d, y in pairs])
    assert accuracy == pytest.approx(expected, abs=1e-9), (accuracy, expected)
    assert accuracy[DEGRADED] < 0.5 < 0.8 < min(accuracy[v] for v in CHANNELS[:3])
    assert overall is not None and accuracy[DEGRADED] < overall < min(
        accuracy[v] for v in CHANNELS[:3]
    )


# --- the label join and the learner on a real Redis ---------------------------------------


def label_message(offset: int, event_id: str, label: int) -> InputMessage:
    value = orjson.dumps({"event_id": event_id, "label": label})
    return InputMessage(None, value, "labels", 0, offset, 1_800_000_000.0)


async def test_slice_values_travel_from_the_store_to_a_checkpointed_evaluation(
    card_fraud: PreparedPipeline, redis_client
) -> None:
    spec = card_fraud.spec.model_copy(
        update={
            "name": f"slices-{uuid.uuid4().hex[:8]}",
            "online": None,
            "monitoring": card_fraud.spec.monitoring.model_copy(update={"slices": ("channel",)}),
        }
    )
    layout = SliceLayout.of(spec)
    assert layout is not None
    now = time.time()
    n, width = 40, len(spec.input_columns())
    ids = [f"s{i}" for i in range(n)]
    channels = [CHANNELS[i % 4] for i in range(n)]
    store = PredictionStore(redis_client, spec.name, spec.labels.window_seconds)
    codes = layout.codes([{"channel": c} for c in channels])
    vectors = np.zeros((n, width), dtype=np.float32)
    scores = [0.9] * n  # every decision "fraud"
    stored = layout.stored(codes[:-4])
    await store.put_predictions(
        ids[:-4], now, spec.model.name, 1, scores[:-4], vectors[:-4], slices=stored
    )
    # The last four as stored before slices: they count in the overall evaluation only.
    await store.put_predictions(ids[-4:], now, spec.model.name, 1, scores[-4:], vectors[-4:])
    labels = [0 if c == DEGRADED else 1 for c in channels]  # only online is wrong
    joiner = LabelJoiner(spec, store, Metrics())
    outcome = await joiner.join(
        [label_message(i, e, y) for i, (e, y) in enumerate(zip(ids, labels, strict=True))]
    )
    assert [r["slices"] for r in outcome.joined[:2]] == [("chip",), ("contactless",)]
    assert outcome.joined[-1]["slices"] is None

    metrics = Metrics()
    learner = LearnerService(spec, redis_client, metrics)
    assert await learner.handle(outcome.joined) == n

    def reported(value: str, metric: str) -> float | None:
        return metrics.registry.get_sample_value(
            "streamscore_slice_online_metric",
            {"pipeline": spec.name, "model": spec.model.name, "slice": "channel",
             "value": value, "metric": metric},
        )  # fmt: skip

    assert reported(DEGRADED, "accuracy") == 0.0
    assert all(reported(v, "accuracy") == 1.0 for v in CHANNELS[:3])
    assert sum(reported(v, "window_count") or 0 for v in CHANNELS) == n - 4
    key = Keys(spec.name).slice_evaluation
    checkpoint = SlicedEvaluation.restore(await redis_client.hgetall(key), layout).snapshot()
    assert checkpoint == learner.sliced.snapshot()
    assert checkpoint[("channel", DEGRADED)][spec.model.name]["count"] == 9
    # A restarted learner resumes from the checkpoint; a replay counts nothing twice.
    again = LearnerService(spec, redis_client, Metrics())
    assert await again.handle(outcome.joined) == 0
    assert again.sliced is not None and again.sliced.snapshot() == checkpoint
    # One more online label: its checkpoint rewrites that value's evaluation only.
    fields_before = await redis_client.hgetall(key)
    more = dict(outcome.joined[3], event_id="s-more")  # an online event's prediction
    assert await again.handle([more]) == 1
    fields_after = await redis_client.hgetall(key)
    changed = {f for f in fields_after if fields_after[f] != fields_before.get(f)}
    assert changed == {b'["channel","online"]'} and len(fields_after) == 4
