"""Feature freshness: ages at event time per view, and ``features.max_age_seconds``.

The policy on arrays (no store), then through the scoring pipeline with an in-memory
feature source: records, counters and the age histogram. The spec's validation of the
policy, in the spec loader and in ``streamscore validate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest

from features.freshness import FreshnessPolicy
from streams.cli.validate import validate
from streams.errors import SpecError
from streams.metrics import Metrics
from streams.scoring.pipeline import ScoringPipeline
from streams.scoring.records import InputMessage
from streams.spec import FeaturesSpec, PipelineSpec, load_spec_text

DEMO_SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"

SPEC_TEXT = """
name: fresh
input: {topic: events}
event:
  id_field: id
  time_field: at
  fields:
    id: {type: string}
    at: {type: timestamp}
    user: {type: string}
    amount: {type: float}
entity: {field: user, join_key: user_id}
features:
  repo: repo
  refs: ["daily:spend", "daily:visits", "live:clicks"]
  defaults: {"daily:spend": -1.0, "daily:visits": 0.0, "live:clicks": 0.0}
%s
model_input:
  - {event: amount}
  - {feature: "daily:spend"}
  - {feature: "daily:visits"}
  - {feature: "live:clicks"}
model: {name: fake}
output: {topic: scores, dead_letter_topic: dlq}
"""
EVENT_TIME = 1_700_000_000.0


def spec_with(policy: str = "") -> PipelineSpec:
    return load_spec_text(SPEC_TEXT % policy, base_dir=Path("/tmp"), source="fresh.yaml")


def features_with(max_age: float | dict[str, float] | None) -> FeaturesSpec:
    return spec_with().features.model_copy(update={"max_age_seconds": max_age})


@dataclass
class Rows:
    values: np.ndarray
    defaulted: np.ndarray
    entity_found: np.ndarray
    timestamps: np.ndarray


def rows(ages: list[tuple[float | None, float | None]]) -> Rows:
    """Rows aged (daily, live) seconds at EVENT_TIME; None: the store had no row."""
    n = len(ages)
    stamps = np.array(
        [[np.nan if a is None else EVENT_TIME - a for a in row] for row in ages], dtype=np.float64
    )
    missing = np.isnan(stamps)[:, [0, 0, 1]]
    values = np.where(missing, [-1.0, 0.0, 0.0], [[10.0, 3.0, 7.0]] * n)
    return Rows(values, missing, ~missing.all(axis=1), stamps)


# --- the policy on arrays --------------------------------------------------------------------


def test_ages_are_event_time_minus_row_time_and_nan_where_missing() -> None:
    served = FreshnessPolicy(features_with(None)).apply(
        rows([(30.0, 2.5), (None, 0.0), (None, None)]), np.full(3, EVENT_TIME)
    )

    np.testing.assert_array_equal(served.ages, [[30.0, 2.5], [np.nan, 0.0], [np.nan, np.nan]])
    assert not served.stale.any()


def test_without_a_policy_old_rows_are_served() -> None:
    given = rows([(1e7, 1e7)])
    served = FreshnessPolicy(features_with(None)).apply(given, np.full(1, EVENT_TIME))

    np.testing.assert_array_equal(served.values, given.values)
    assert not served.defaulted.any() and not served.stale_values.any()


def test_a_stale_row_is_defaulted_and_flagged_a_fresh_one_kept_a_missing_one_stays_missing() -> (
    None
):
    given = rows([(120.0, 5.0), (30.0, 5.0), (None, 5.0), (60.0, 5.0)])
    served = FreshnessPolicy(features_with(60)).apply(given, np.full(4, EVENT_TIME))

    # Row 0: daily is 120 s old, over 60: its two refs take their defaults.
    np.testing.assert_array_equal(served.values[0], [-1.0, 0.0, 7.0])
    np.testing.assert_array_equal(served.stale[0], [True, False])
    np.testing.assert_array_equal(served.stale_values[0], [True, True, False])
    np.testing.assert_array_equal(served.defaulted[0], [True, True, False])
    assert served.ages[0, 0] == 120.0  # the stale row's age is still reported
    # Row 1 (30 s) and row 3 (exactly 60 s: not older than the limit) are kept.
    for i in (1, 3):
        np.testing.assert_array_equal(served.values[i], [10.0, 3.0, 7.0])
        assert not served.stale[i].any() and not served.defaulted[i].any()
    # Row 2: no daily row. Missing, defaulted, never stale.
    assert not served.stale[2].any() and not served.stale_values[2].any()
    np.testing.assert_array_equal(served.missing[2], [True, True, False])
    np.testing.assert_array_equal(served.defaulted[2], [True, True, False])
    assert served.entity_found.all()


def test_limits_per_view_apply_only_to_their_view() -> None:
    given = rows([(1_000.0, 1_000.0)])
    served = FreshnessPolicy(features_with({"live": 10})).apply(given, np.full(1, EVENT_TIME))

    np.testing.assert_array_equal(served.stale, [[False, True]])
    np.testing.assert_array_equal(served.values, [[10.0, 3.0, 0.0]])


def test_a_row_newer_than_its_event_has_a_negative_age_and_is_not_stale() -> None:
    served = FreshnessPolicy(features_with(60)).apply(rows([(-5.0, 0.0)]), np.full(1, EVENT_TIME))

    assert served.ages[0, 0] == -5.0 and not served.stale.any()


# --- through the scoring pipeline -------------------------------------------------------------


class Features:
    def __init__(self, given: Rows) -> None:
        self.given = given

    async def read_async(self, keys):
        return self.given


class Scorer:
    name, version = "fake", 1

    def score(self, matrix):
        return matrix[:, 1].astype(np.float64)  # the first feature: defaulted or not


def message(i: int) -> InputMessage:
    at = "2023-11-14T22:13:20Z"  # EVENT_TIME
    value = orjson.dumps({"id": f"e{i}", "at": at, "user": f"u{i}", "amount": 1.0})
    return InputMessage(None, value, "events", 0, i, 0.0)


async def score(spec: PipelineSpec, given: Rows, metrics: Metrics) -> list[dict]:
    pipeline = ScoringPipeline(spec, Features(given), Scorer(), metrics, clock=lambda: EVENT_TIME)
    scored = await pipeline.score_batch([message(i) for i in range(len(given.values))])
    return [orjson.loads(record.value) for record in scored.predictions]


async def test_records_carry_ages_and_stale_views_and_the_stale_values_are_counted() -> None:
    metrics = Metrics()
    spec = spec_with("  max_age_seconds: {daily: 3600}")
    predictions = await score(spec, rows([(7200.5, 1.0), (10.0, None), (None, None)]), metrics)

    stale, fresh, unknown = predictions
    assert stale["feature_age_seconds"] == {"daily": 7200.5, "live": 1.0}
    assert stale["stale_views"] == ["daily"]
    assert stale["score"] == -1.0 and stale["features"]["daily__spend"] == -1.0
    assert stale["defaulted_features"] == ["daily__spend", "daily__visits"]
    assert stale["features_defaulted"] is True and stale["entity_found"] is True
    assert fresh["feature_age_seconds"] == {"daily": 10.0, "live": None}
    assert fresh["stale_views"] == [] and fresh["score"] == 10.0
    assert fresh["defaulted_features"] == ["live__clicks"]
    assert unknown["feature_age_seconds"] == {"daily": None, "live": None}
    assert unknown["stale_views"] == [] and unknown["entity_found"] is False

    sample = metrics.registry.get_sample_value

    def defaulted(feature: str, reason: str) -> float | None:
        labels = {"pipeline": "fresh", "feature": feature, "reason": reason}
        return sample("streamscore_defaulted_features_total", labels)

    assert defaulted("daily__spend", "stale") == 1 and defaulted("daily__spend", "missing") == 1
    assert defaulted("live__clicks", "stale") == 0 and defaulted("live__clicks", "missing") == 2
    ages = {"pipeline": "fresh", "view": "daily"}
    assert sample("streamscore_feature_age_seconds_count", ages) == 2  # the missing row: none
    assert sample("streamscore_feature_age_seconds_sum", ages) == pytest.approx(7210.5)
    assert sample("streamscore_feature_age_seconds_bucket", {**ages, "le": "60.0"}) == 1
    live = {"pipeline": "fresh", "view": "live"}
    assert sample("streamscore_feature_age_seconds_count", live) == 1


async def test_without_a_policy_records_carry_ages_but_no_stale_views() -> None:
    predictions = await score(spec_with(), rows([(1e6, 1.0)]), Metrics())

    assert predictions[0]["feature_age_seconds"] == {"daily": 1e6, "live": 1.0}
    assert "stale_views" not in predictions[0] and predictions[0]["score"] == 10.0


# --- the spec ---------------------------------------------------------------------------------


def test_max_age_is_one_number_for_every_view_or_a_mapping() -> None:
    assert spec_with().features.max_age_by_view() == {}
    assert spec_with("  max_age_seconds: 60").features.max_age_by_view() == {
        "daily": 60.0,
        "live": 60.0,
    }
    policy = spec_with("  max_age_seconds: {live: 1.5}").features
    assert policy.max_age_by_view() == {"live": 1.5}
    assert policy.views == ("daily", "live")


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        ("{dialy: 60}", "max_age_seconds: unknown feature views ['dialy']; the views of"),
        ("0", "max_age_seconds: 0 is not a positive number of seconds"),
        ("{live: -3}", "view 'live': -3 is not a positive number of seconds"),
        ("true", "expected seconds (a number), got True"),
        ("a day", "expected seconds (a number), got 'a day'"),
        (".inf", "inf is not a positive number of seconds"),
    ],
)
def test_a_bad_policy_is_refused_at_load_in_one_line(policy: str, error: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_with(f"  max_age_seconds: {policy}")

    message = str(caught.value)
    assert message.startswith("fresh.yaml: invalid pipeline spec: features")
    assert error in message and "\n" not in message


def test_validate_reports_the_policy_and_refuses_an_unknown_view(tmp_path: Path) -> None:
    repo = str(DEMO_SPEC.parents[2] / "features" / "card_fraud")
    text = DEMO_SPEC.read_text().replace("../../features/card_fraud", repo)

    def with_policy(path: Path, policy: str) -> Path:
        service = "  service: card_fraud_v1\n"
        path.write_text(text.replace(service, f"{service}  max_age_seconds: {policy}\n"))
        return path

    good = with_policy(tmp_path / "good.yaml", "{card_stats: 172800}")
    bad = with_policy(tmp_path / "bad.yaml", "{card_stat: 172800}")

    lines = [check.line() for check in validate(good, environ={})]
    assert "✓ features: feature freshness: card_stats at most 172800 s old at event time" in lines

    failed = [check.line() for check in validate(bad, environ={}) if not check.ok]
    assert len(failed) == 1 and failed[0].startswith("✗ spec: "), failed
    assert "unknown feature views ['card_stat']" in failed[0]
