"""The learner on a real Redis: realized accuracy per window of prediction time beside the
label-free estimate, ADWIN on each model's errors, both checkpointed with the evaluation
and resumed by a restarted learner (JSON only: a planted pickle is never run)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from streams.learning.join import Label, joined_record
from streams.learning.learner import LearnerService
from streams.metrics import Metrics
from streams.scoring.prediction_store import Keys
from streams.spec import CanarySpec, PipelineSpec, load_spec_text
from tests.planted import planted_pickle
from tests.unit.test_drift import SPEC_TEXT
from tests.unit.test_performance import calibrated, overconfident

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0  # a multiple of 60: a window of prediction time starts there
PRIMARY, SHADOW = "drifty_lr", "drifty_tree"
LABELS = """
shadows: [{name: drifty_tree}]
labels: {topic: drifty-labels, window_seconds: 600}
monitoring: {window: {seconds: 60}, performance: {min_labels: 500, error_history: 5000}}
"""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def spec() -> PipelineSpec:
    name = f"perf-{uuid.uuid4().hex[:8]}"
    text = SPEC_TEXT.replace("name: drifty\n", f"name: {name}\n", 1).replace("MONITORING", LABELS)
    return load_spec_text(text, base_dir=Path("/tmp"))


def window_of_labels(
    start: float, primary: np.ndarray, labels: np.ndarray, prefix: str
) -> list[dict]:
    """Joined labels of predictions made in the minute from ``start``; the shadow's scores
    are noise (it is wrong half the time whatever the labels)."""
    times = start + np.linspace(0, 59.9, len(labels))
    noise = np.random.default_rng(len(prefix) + int(start) % 1000).random(len(labels))
    return [
        joined_record(
            Label(f"{prefix}-{i}", bool(y), t), float(t), False, np.zeros(7, np.float32),
            {PRIMARY: float(p), SHADOW: float(s)},
        )
        for i, (t, p, y, s) in enumerate(zip(times, primary, labels, noise, strict=True))
    ]  # fmt: skip


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def handle_in_batches(learner: LearnerService, records: list[dict], size: int = 100):
    for start in range(0, len(records), size):
        await learner.handle(records[start : start + size])


async def test_realized_beside_estimate_and_concept_drift_resume_after_a_restart(
    spec, redis_client, tmp_path, caplog
) -> None:
    metrics = Metrics()
    learner = LearnerService(spec, redis_client, metrics, clock=Clock(T0 + 600))
    pipeline = {"pipeline": spec.name}
    primary = {**pipeline, "model": PRIMARY}
    for model in (PRIMARY, SHADOW):  # exported at 0 from the start
        for direction in ("worse", "better"):
            assert value(
                metrics, "streamscore_concept_drift_detections_total",
                **pipeline, model=model, direction=direction,
            ) == 0  # fmt: skip
    assert value(metrics, "streamscore_realized_accuracy", **primary) is None

    # Minute 1: calibrated scores. The estimate on those labelled predictions and the
    # realized accuracy agree.
    p, y = calibrated(3000, seed=21)
    await handle_in_batches(learner, window_of_labels(T0, p, y, "a"))
    realized = value(metrics, "streamscore_realized_accuracy", **primary)
    assert realized == pytest.approx(np.mean((p >= 0.5) == y))
    difference = value(metrics, "streamscore_estimated_minus_realized_accuracy", **primary)
    assert difference is not None and abs(difference) < 0.02
    start = "streamscore_realized_accuracy_window_start_timestamp_seconds"
    assert value(metrics, start, **primary) == T0

    # Minute 2: the same decisions, overconfident scores: the estimate runs ahead.
    q, z = calibrated(3000, seed=22)
    await handle_in_batches(learner, window_of_labels(T0 + 60, overconfident(q), z, "b"))
    assert value(metrics, start, **primary) == T0 + 60
    difference = value(metrics, "streamscore_estimated_minus_realized_accuracy", **primary)
    assert difference is not None and difference > 0.08
    worse = {**primary, "direction": "worse"}
    assert value(metrics, "streamscore_concept_drift_detections_total", **worse) == 0

    # Minute 3: the concept flips for the primary (labels now oppose its decisions half the
    # time): ADWIN sees its error rate jump; the shadow's errors do not change.
    r, w = calibrated(1500, seed=23)
    flipped = np.where(np.random.default_rng(24).random(1500) < 0.5, ~w, w)
    with caplog.at_level(logging.WARNING, logger="streams.learning.learner"):
        await handle_in_batches(learner, window_of_labels(T0 + 120, r, flipped, "c"))
    assert value(metrics, "streamscore_concept_drift_detections_total", **worse) >= 1
    shadow_worse = {**pipeline, "model": SHADOW, "direction": "worse"}
    assert value(metrics, "streamscore_concept_drift_detections_total", **shadow_worse) == 0
    assert f"concept drift: the errors of model {PRIMARY} changed" in caplog.text
    error_mean = value(metrics, "streamscore_concept_drift_error_mean", **primary)
    assert error_mean is not None and error_mean > 0.3

    # The labels move to another worker: this one stops exporting its figures (they would
    # freeze beside the new owner's), its counters stay (sums across workers stay true).
    online = "streamscore_online_metric"
    assert value(metrics, online, **primary, metric="accuracy") is not None
    learner.withdraw_figures()
    for name in (online, "streamscore_concept_drift_error_mean", "streamscore_realized_accuracy",
                 "streamscore_estimated_minus_realized_accuracy", start):  # fmt: skip
        labels = {**primary, "metric": "accuracy"} if name == online else primary
        assert value(metrics, name, **labels) is None, name
    assert value(metrics, "streamscore_concept_drift_detections_total", **worse) >= 1

    # A restarted learner resumes both from the checkpoint: the primary's detector exactly
    # (fewer errors since its change than error_history), the shadow's from its newest 5000.
    restarted = LearnerService(spec, redis_client, Metrics(), clock=Clock(T0 + 600))
    await restarted.load()
    resumed, before = restarted.concept_drift, learner.concept_drift
    assert resumed.error_mean(PRIMARY) == before.error_mean(PRIMARY)
    assert resumed.error_mean(SHADOW) == pytest.approx(before.error_mean(SHADOW), abs=0.02)
    assert restarted.realized is not None and learner.realized is not None
    assert restarted.realized.latest() == learner.realized.latest()

    # Whoever writes Redis plants a pickle there: it is refused (not JSON), never run.
    marker = tmp_path / "ran"
    await redis_client.set(Keys(spec.name).performance, planted_pickle(marker))
    planted = LearnerService(spec, redis_client, Metrics(), clock=Clock(T0 + 600))
    with caplog.at_level(logging.WARNING, logger="streams.learning.learner"):
        await planted.load()
    assert "starting new concept-drift detectors and realized accuracy" in caplog.text
    assert planted.concept_drift.models == [] and not marker.exists()
    await planted.handle(window_of_labels(T0 + 180, r[:10], w[:10], "d"))
    stored = orjson.loads(await redis_client.get(Keys(spec.name).performance))
    assert sorted(stored["concept_drift"]["errors"]) == [PRIMARY, SHADOW]  # JSON again


async def test_a_canarys_arm_has_its_concept_drift_series_and_state_from_the_start(
    spec, redis_client
) -> None:
    """The events a canary served carry its score as ``<model>@canary``: that arm is one of
    the learner's models, exported at 0 and restored from the checkpoint like the others."""
    canary = CanarySpec(version="canary", share=0.2)
    model = spec.model.model_copy(update={"canary": canary})
    canary_spec = spec.model_copy(update={"model": model})
    metrics = Metrics()
    learner = LearnerService(canary_spec, redis_client, metrics, clock=Clock(T0 + 600))
    arm = {"pipeline": spec.name, "model": f"{PRIMARY}@canary", "direction": "worse"}
    assert value(metrics, "streamscore_concept_drift_detections_total", **arm) == 0
    p, y = calibrated(300, seed=31)
    records = window_of_labels(T0, p, y, "k")
    for record in records:
        record["scores"][f"{PRIMARY}@canary"] = record["scores"][PRIMARY]
    await handle_in_batches(learner, records)
    restarted = LearnerService(canary_spec, redis_client, Metrics(), clock=Clock(T0 + 600))
    await restarted.load()
    assert restarted.concept_drift.error_mean(f"{PRIMARY}@canary") == pytest.approx(
        learner.concept_drift.error_mean(f"{PRIMARY}@canary")
    )
