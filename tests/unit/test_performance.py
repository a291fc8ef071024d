"""Performance without and with labels: the label-free accuracy estimate per drift window,
the realized accuracy per window of prediction time, ADWIN on each model's errors."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from models.profile import ReferenceProfile
from streams.learning.concept_drift import ConceptDrift, ConceptDriftStateError, errors_of
from streams.learning.realized import KEPT_WINDOWS, RealizedAccuracy, RealizedStateError
from streams.metrics import Metrics
from streams.monitoring.drift import DriftMonitor
from streams.monitoring.estimate import expected_correct
from streams.monitoring.spec import MonitoringSpec
from tests.planted import planted_pickle
from tests.unit.test_drift import Clock, draw, make_spec, reference

N = 20_000  # events per synthetic window: the realized accuracy's sd is ~0.003
TOLERANCE = 0.015


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return reference(make_spec())


def calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores that are calibrated probabilities: each label ~ Bernoulli(its score)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2.0, 3.0, n)
    return p, rng.random(n) < p


def overconfident(p: np.ndarray) -> np.ndarray:
    """The same decisions at 0.5, pushed towards 0 and 1: no longer calibrated."""
    return np.clip(0.5 + 2.5 * (p - 0.5), 0.001, 0.999)


def realized_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.mean((scores >= threshold) == labels))


# --- the estimate itself ------------------------------------------------------------------


def test_the_estimate_matches_realized_accuracy_only_while_scores_are_calibrated() -> None:
    p, labels = calibrated(N, seed=1)
    estimated = expected_correct(p, 0.5).mean()
    assert estimated == pytest.approx(realized_accuracy(p, labels), abs=TOLERANCE)
    served = overconfident(p)
    assert realized_accuracy(served, labels) == realized_accuracy(p, labels)  # same decisions
    assert expected_correct(served, 0.5).mean() - realized_accuracy(served, labels) > 0.08


def test_the_estimate_follows_the_threshold() -> None:
    p, labels = calibrated(N, seed=2)
    for threshold in (0.3, 0.5, 0.7):
        estimated = expected_correct(p, threshold).mean()
        assert estimated == pytest.approx(realized_accuracy(p, labels, threshold), abs=TOLERANCE), (
            threshold
        )


# --- per drift window, in the scoring worker ----------------------------------------------


def observe_all(drift: DriftMonitor, scores: np.ndarray, seed: int, batch: int = 256) -> list:
    matrix = draw(len(scores), np.random.default_rng(seed))
    records = []
    for start in range(0, len(scores), batch):
        part = slice(start, start + batch)
        records += drift.observe("drifty_lr", 1, matrix[part], scores[part])
    return records


def test_each_window_record_and_gauge_carry_the_estimate(profile: ReferenceProfile) -> None:
    metrics = Metrics()
    drift = DriftMonitor(make_spec(f"monitoring: {{window: {{events: {N}}}}}"), metrics, Clock())
    drift.use("drifty_lr", 1, profile)
    p, labels = calibrated(N, seed=3)
    q, later = calibrated(N, seed=4)
    records = observe_all(drift, p, seed=3) + observe_all(drift, overconfident(q), seed=4)
    first, second = (orjson.loads(r.value) for r in records)
    assert first["estimated_accuracy"] == pytest.approx(realized_accuracy(p, labels), abs=TOLERANCE)
    # Miscalibrated: the estimate is above what the labels will say.
    assert second["estimated_accuracy"] - realized_accuracy(q, later) > 0.08
    gauge = metrics.registry.get_sample_value(
        "streamscore_estimated_accuracy", {"pipeline": "drifty", "model": "drifty_lr"}
    )
    assert gauge == second["estimated_accuracy"]


def test_a_window_split_between_batches_counts_each_event_once(profile) -> None:
    drift = DriftMonitor(make_spec("monitoring: {window: {events: 1000}}"), Metrics(), Clock())
    drift.use("drifty_lr", 1, profile)
    scores = np.r_[np.full(700, 0.9), np.full(700, 0.2)]  # the window closes mid-batch
    records = observe_all(drift, scores, seed=5, batch=700)
    (record,) = (orjson.loads(r.value) for r in records)
    assert record["estimated_accuracy"] == pytest.approx((700 * 0.9 + 300 * 0.8) / 1000)


def test_a_regression_window_has_no_estimate(profile: ReferenceProfile) -> None:
    spec = make_spec("task: regression\nmonitoring: {window: {events: 500}}")
    metrics = Metrics()
    drift = DriftMonitor(spec, metrics, Clock())
    drift.use("drifty_lr", 1, profile)
    (record,) = (orjson.loads(r.value) for r in observe_all(drift, np.full(500, 3.0), seed=6))
    assert record["estimated_accuracy"] is None
    labels = {"pipeline": "drifty", "model": "drifty_lr"}
    assert metrics.registry.get_sample_value("streamscore_estimated_accuracy", labels) is None


# --- realized accuracy per window of prediction time, in the learner ----------------------


def test_realized_accuracy_is_per_window_of_prediction_time_beside_the_estimate() -> None:
    realized = RealizedAccuracy(bucket_seconds=60.0, min_labels=1000)
    p, labels = calibrated(N, seed=7)
    q, later = calibrated(N, seed=8)
    t0 = 1_800_000_000.0  # a multiple of 60: the windows start there
    times = t0 + np.linspace(0, 59.9, N)
    for part in np.array_split(np.arange(N), 37):  # labels come in batches of any size
        realized.update(times[part], p[part], labels[part], 0.5)
    window = realized.latest()
    assert window is not None and window.start == t0 and window.labels == N
    assert window.realized == pytest.approx(realized_accuracy(p, labels))
    assert window.estimated == pytest.approx(expected_correct(p, 0.5).mean())
    assert abs(window.estimated - window.realized) < TOLERANCE

    # The next minute's predictions were overconfident; too few labels yet: still the first.
    realized.update(times[:999] + 60, overconfident(q[:999]), later[:999], 0.5)
    assert realized.latest() == window
    realized.update(times[999:] + 60, overconfident(q[999:]), later[999:], 0.5)
    newer = realized.latest()
    assert newer is not None and newer.start == t0 + 60
    assert newer.estimated - newer.realized > 0.08


def test_realized_counts_survive_a_restart_as_json_and_refuse_anything_else() -> None:
    realized = RealizedAccuracy(bucket_seconds=10.0, min_labels=1)
    p, labels = calibrated(500, seed=9)
    times = np.linspace(0, 10 * (KEPT_WINDOWS + 5), 500)  # more windows than kept
    realized.update(times, p, labels, 0.5)
    data = orjson.loads(orjson.dumps(realized.to_data()))
    assert len(data["windows"]) == KEPT_WINDOWS
    restored = RealizedAccuracy.from_data(data, bucket_seconds=10.0, min_labels=1)
    assert restored.latest() == realized.latest()
    # Windows of another length (the spec changed) are not comparable: a new count.
    assert RealizedAccuracy.from_data(data, bucket_seconds=30.0, min_labels=1).latest() is None
    for bad in (None, {"format": 9}, {**data, "windows": {"x": [1, 1, 1]}}):
        with pytest.raises(RealizedStateError):
            RealizedAccuracy.from_data(bad, bucket_seconds=10.0, min_labels=1)


# --- concept drift: ADWIN on each model's errors ------------------------------------------


def error_stream(rates: list[tuple[float, int]], seed: int) -> np.ndarray:
    """0/1 errors: ``n`` draws at each error rate, in order."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(n) < rate for rate, n in rates]).astype(np.float32)


def feed_in_batches(drift: ConceptDrift, model: str, stream: np.ndarray, batch: int = 64):
    changes = []
    for start in range(0, len(stream), batch):
        found = drift.update(model, stream[start : start + batch])
        changes += [(start, change) for change in found]
    return changes


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_adwin_stays_quiet_on_a_stationary_error_stream(seed: int) -> None:
    drift = ConceptDrift(delta=0.002, history=1000)
    assert feed_in_batches(drift, "m", error_stream([(0.1, 20_000)], seed)) == []
    assert drift.error_mean("m") == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_adwin_detects_the_error_rate_flip_soon_after_it(seed: int) -> None:
    drift = ConceptDrift(delta=0.002, history=1000)
    stream = error_stream([(0.1, 5000), (0.4, 2000)], seed)
    changes = feed_in_batches(drift, "m", stream)
    assert changes, "no change found"
    first_at, first = changes[0]
    assert 5000 - 64 <= first_at < 5500, first_at  # within a few hundred labels of the flip
    assert first.worse and first.before < first.after
    assert all(change.worse for _, change in changes)
    assert drift.error_mean("m") == pytest.approx(0.4, abs=0.06)


def test_an_improving_model_is_a_better_change() -> None:
    drift = ConceptDrift(delta=0.002, history=1000)
    changes = feed_in_batches(drift, "m", error_stream([(0.5, 3000), (0.1, 2000)], seed=14))
    assert changes and not any(change.worse for _, change in changes)


def test_absolute_errors_of_a_regressor_drift_too() -> None:
    rng = np.random.default_rng(15)
    labels = rng.normal(30, 5, 6000)
    scores = labels + np.r_[rng.normal(0, 1, 4000), rng.normal(0, 4, 2000)]  # worse later
    drift = ConceptDrift(delta=0.002, history=1000)
    changes = feed_in_batches(drift, "eta", errors_of(scores, labels, None))
    assert changes and changes[0][0] >= 3900 and changes[0][1].worse


def test_a_restored_detector_continues_exactly_as_the_original() -> None:
    stream = error_stream([(0.1, 800), (0.4, 1500), (0.1, 1500)], seed=16)
    original = ConceptDrift(delta=0.002, history=5000)
    feed_in_batches(original, "m", stream[:1200])
    data = orjson.loads(orjson.dumps(original.to_data()))  # what the checkpoint holds
    restored = ConceptDrift.from_data(data, delta=0.002, history=5000)
    assert restored.error_mean("m") == original.error_mean("m")
    rest = stream[1200:]
    assert [(at, c) for at, c in feed_in_batches(restored, "m", rest)] == [
        (at, c) for at, c in feed_in_batches(original, "m", rest)
    ]


def test_a_model_no_longer_in_the_spec_is_not_restored() -> None:
    drift = ConceptDrift(delta=0.002, history=1000)
    for model in ("primary", "removed_shadow"):
        drift.update(model, error_stream([(0.1, 300)], seed=18))
    restored = ConceptDrift.from_data(drift.to_data(), 0.002, 1000, models={"primary"})
    assert restored.models == ["primary"]


def test_the_checkpointed_history_is_bounded() -> None:
    drift = ConceptDrift(delta=0.002, history=1000)
    feed_in_batches(drift, "m", error_stream([(0.1, 5000)], seed=17))
    stored = drift.to_data()["errors"]["m"]
    assert len(base64.b64decode(stored)) == 1000 * 4  # float32 each
    restored = ConceptDrift.from_data(drift.to_data(), delta=0.002, history=1000)
    assert restored.error_mean("m") == pytest.approx(drift.error_mean("m"), abs=0.03)


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"format": 2, "errors": {}},
        {"format": 1, "errors": []},
        {"format": 1, "errors": {"m": 3}},
        {"format": 1, "errors": {"m": "not base64!"}},
        {"format": 1, "errors": {"m": base64.b64encode(b"abc").decode()}},
        {"format": 1, "errors": {"m": base64.b64encode(np.float32([np.nan]).tobytes()).decode()}},
    ],
)
def test_a_damaged_or_foreign_state_is_refused(data) -> None:
    with pytest.raises(ConceptDriftStateError):
        ConceptDrift.from_data(data, delta=0.002, history=1000)


def test_a_planted_pickle_in_the_errors_is_refused_never_run(tmp_path) -> None:
    marker = tmp_path / "ran"
    planted = base64.b64encode(planted_pickle(marker)).decode()
    with pytest.raises(ConceptDriftStateError):
        ConceptDrift.from_data({"format": 1, "errors": {"m": planted}}, 0.002, 1000)
    assert not marker.exists()


# --- the spec ------------------------------------------------------------------------------


def test_the_performance_section_defaults_and_its_windows() -> None:
    default = MonitoringSpec()
    assert default.performance.min_labels == 100
    assert default.performance_bucket_seconds == 300.0  # the window counts events
    timed = MonitoringSpec.model_validate({"window": {"seconds": 120}})
    assert timed.performance_bucket_seconds == 120.0
    chosen = MonitoringSpec.model_validate(
        {"window": {"seconds": 120}, "performance": {"bucket_seconds": 60}}
    )
    assert chosen.performance_bucket_seconds == 60.0


@pytest.mark.parametrize(
    "performance",
    [{"adwin_delta": 0}, {"adwin_delta": 1}, {"min_labels": 0}, {"error_history": 5}, {"x": 1}],
)
def test_a_wrong_performance_section_is_refused(performance: dict) -> None:
    with pytest.raises(ValidationError, match="performance"):
        MonitoringSpec.model_validate({"performance": performance})
