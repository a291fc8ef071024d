"""The controller's pure parts: the spec's ``actions.retrain`` (validated, off by default),
the triggers, the refusal buckets and the summary line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.actions.controller import Tick, evidence_bucket, nothing_to_do
from streams.actions.spec import MetricFloor, RetrainSpec
from streams.actions.triggers import (
    DriftStreak,
    at_alert,
    floor_reason,
    interval_left,
    labels_reason,
)
from streams.errors import SpecError
from streams.spec import load_spec, load_spec_text

CARD_FRAUD = Path(__file__).parents[2] / "streams" / "specs" / "card_fraud.yaml"
BASE = load_spec(CARD_FRAUD)


def spec_text(actions: dict, **changes: object) -> str:
    doc = BASE.model_dump(mode="json", exclude_none=True)
    doc.update(changes)
    doc["actions"] = actions
    return yaml.safe_dump(doc)


def test_retrain_is_off_by_default_and_a_controller_then_has_nothing_to_do() -> None:
    assert not BASE.actions.retrain.enabled and not BASE.actions.promote.auto
    assert "nothing for a controller to do" in (nothing_to_do(BASE) or "")


def test_a_retrain_section_is_read_with_its_triggers(tmp_path: Path) -> None:
    actions = {
        "retrain": {
            "every_labels": 500,
            "on_drift": {"windows": 2},
            "metric_floor": {"metric": "roc_auc", "value": 0.8},
            "min_interval_seconds": 60,
            "window_seconds": 3600,
        },
        "promote": {"auto": True},
    }
    spec = load_spec_text(spec_text(actions), tmp_path)
    retrain = spec.actions.retrain
    assert retrain.enabled and retrain.every_labels == 500 and retrain.on_drift is not None
    assert retrain.on_drift.windows == 2 and retrain.metric_floor == MetricFloor(
        metric="roc_auc", value=0.8, min_labels=200
    )
    assert nothing_to_do(spec) is None


@pytest.mark.parametrize(
    ("actions", "changes", "message"),
    [
        ({"retrain": {"every_labels": 0}}, {}, "actions.retrain.every_labels: Input should be"),
        ({"retrain": {"on_drift": {"windows": 0}}}, {}, "actions.retrain.on_drift.windows"),
        ({"retrain": {"metric_floor": {"metric": "mae", "value": 3}}}, {},
         "actions.retrain.metric_floor.metric: 'mae' is not a classification metric"),
        ({"retrain": {"every_labels": 10}}, {"training": None},
         "actions.retrain: retraining from the stream needs 'labels' with keep_labelled"),
        ({"promote": {"auto": True}}, {"model": {"name": "fraud_gbt", "version": "3"}},
         "actions.promote.auto: the controller moves the 'champion' alias"),
        ({"retrain": {"min_interval_seconds": -1}}, {},
         "actions.retrain.min_interval_seconds: Input should be greater"),
    ],
)  # fmt: skip
def test_bad_retrain_or_auto_settings_are_refused_naming_the_field(
    actions: dict, changes: dict, message: str, tmp_path: Path
) -> None:
    text = spec_text(actions, **changes)
    if changes.get("training", 0) is None:
        doc = yaml.safe_load(text)
        doc.pop("training")
        doc["task"] = "classification"
        text = yaml.safe_dump(doc)
    with pytest.raises(SpecError) as error:
        load_spec_text(text, tmp_path)
    assert message in str(error.value)


def test_the_labels_trigger_counts_from_the_last_retrain() -> None:
    spec = RetrainSpec(every_labels=100)
    assert labels_reason(spec, labels=199, at_retrain=100) is None
    assert labels_reason(spec, labels=200, at_retrain=100) == (
        "100 new labels since the last retrain (actions.retrain.every_labels: 100)"
    )
    assert labels_reason(RetrainSpec(), labels=10**6, at_retrain=0) is None


def test_the_floor_trigger_wants_enough_labels_and_a_worse_value_either_way() -> None:
    auc = MetricFloor(metric="roc_auc", value=0.8, min_labels=100)
    assert floor_reason(auc, {"roc_auc": 0.7, "window_count": 99}) is None  # too few
    assert floor_reason(auc, {"roc_auc": 0.85, "window_count": 500}) is None
    assert floor_reason(auc, {"roc_auc": float("nan"), "window_count": 500}) is None
    assert floor_reason(auc, {"roc_auc": 0.7, "window_count": 500}) == (
        "served roc_auc 0.7 over 500 labels is below the floor 0.8 (actions.retrain.metric_floor)"
    )
    loss = MetricFloor(metric="log_loss", value=0.3, min_labels=1)
    assert floor_reason(loss, {"log_loss": 0.2, "window_count": 5}) is None
    assert "log_loss 0.5 over 5 labels is above the floor 0.3" in (
        floor_reason(loss, {"log_loss": 0.5, "window_count": 5}) or ""
    )
    assert floor_reason(auc, None) is None and floor_reason(None, {"roc_auc": 0.1}) is None


def test_retrains_are_spaced_by_the_minimum_interval() -> None:
    spec = RetrainSpec(every_labels=1, min_interval_seconds=600)
    assert interval_left(spec, last_start=None, now=1000.0) == 0.0
    assert interval_left(spec, last_start=1000.0, now=1100.0) == 500.0
    assert interval_left(spec, last_start=1000.0, now=1700.0) == 0.0


def drift(model: str, score: float, column: float = 0.0, end: str = "2030-01-01T00:00:10Z"):
    return {
        "kind": "drift", "model": model, "window_end": end,
        "thresholds": {"warn": 0.1, "alert": 0.25},
        "columns": {"amount": {"psi": column}}, "score": {"psi": score},
    }  # fmt: skip


def test_the_drift_streak_counts_consecutive_alert_windows_of_the_primary_only() -> None:
    assert at_alert(drift("m", 0.3)) and at_alert(drift("m", 0.0, column=0.26))
    assert not at_alert(drift("m", 0.25, column=0.2)) and not at_alert({"kind": "drift"})
    streak = DriftStreak("m", windows=3)
    for record in (drift("m", 0.3), drift("other", 0.0), {"kind": "quality"}, drift("m", 0.4)):
        streak.add(record, since=None)
    assert streak.count == 2 and streak.reason() is None
    streak.add(drift("m", 0.05), since=None)  # one calm window breaks the streak
    assert streak.count == 0
    for _ in range(3):
        streak.add(drift("m", 0.0, column=0.9), since=None)
    assert streak.reason() == (
        "drift at alert level in 3 consecutive windows of m (actions.retrain.on_drift.windows: 3)"
    )
    # Windows that ended before the last retrain started are what it answered.
    streak.reset()
    since = 1_893_456_100.0  # 2030-01-01T00:01:40Z
    streak.add(drift("m", 0.9, end="2030-01-01T00:01:00Z"), since=since)
    assert streak.count == 0
    streak.add(drift("m", 0.9, end="2030-01-01T00:02:00Z"), since=since)
    assert streak.count == 1


def test_refusals_are_recorded_per_bucket_of_evidence_not_per_tick() -> None:
    buckets = [evidence_bucket(n, 50) for n in (1, 10, 49, 50, 60, 99, 100, 150, 200, 399, 400)]
    assert buckets == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4]


def test_the_summary_line_says_what_the_tick_saw() -> None:
    tick = Tick(
        labels_since=120, drift_streak=1, retrain="idle", champion=1, challenger=2,
        evidence=80, decision="refuse (too few labels)",
    )  # fmt: skip
    assert tick.line("p") == (
        "controller p: labels since retrain 120 | drift streak 1 | retrain idle"
        " | champion v1 challenger v2 | evidence n=80 | decision refuse (too few labels)"
    )
    assert "standby" in Tick(leader=False).line("p")


async def test_a_challenger_shadows_inference_time_counts_for_its_registry_version() -> None:
    """The latency guard looks up ``fraud_gbt@3``: the challenger shadow, named
    ``fraud_gbt@challenger``, must count there (it counted under 'fraud_gbt@challenger@3',
    so every automatic promotion of a challenger failed the guard)."""
    from streams.scoring.prediction_store import PredictionStore
    from tests.unit.test_canary import RecordingRedis

    redis = RecordingRedis()
    store = PredictionStore(redis, "unit", window_seconds=60)  # type: ignore[arg-type]
    await store.put_shadow_scores("fraud_gbt@challenger", ["a", "b"], [0.1, 0.2], 3, 0.004)
    assert "fraud_gbt@3" in redis.args and not [
        a for a in redis.args if isinstance(a, str) and "@challenger@" in a
    ]
