"""The figures of issue 13's proof, computed from the online shadow's records
(load_tests/online_served.py) and reported by ``python -m load_tests.online_accuracy``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from load_tests.online_accuracy import Plan, markdown, summarize
from load_tests.online_served import (
    PHISHING_SPEC,
    Reference,
    Replayed,
    buckets,
    decisions_at_served_staleness,
    per_pass_from_cumulative,
    progressive_decisions,
    river_reference,
    scored_after_ms,
    served_by_event,
    served_figures,
    share_within,
    spread,
    stream,
)
from streams.spec import load_spec


def record(k: int, decision: bool, learned: int, model: str = "phish_river") -> dict:
    return {
        "event_id": f"page-{k}",
        "model": model,
        "decision": decision,
        "learned_labels": learned,
    }


def test_records_are_taken_by_event_for_the_online_model_only() -> None:
    values = [
        record(0, True, 0),
        record(1, False, 0, model="phish_lr"),  # another model's record
        {"event_id": "warmup", "model": "phish_river", "decision": True, "learned_labels": 0},
        {"event_id": "page-x", "model": "phish_river", "decision": True, "learned_labels": 0},
        record(2, False, 0),
    ]
    assert sorted(served_by_event(values, "phish_river")) == [0, 2]


def test_scored_after_is_scored_at_minus_event_time() -> None:
    values = [
        {**record(0, True, 0, model="phish_lr"), "event_time": "2026-01-01T00:00:00+00:00",
         "scored_at": "2026-01-01T00:00:00.025000+00:00"},
        {**record(1, True, 0), "event_time": "2026-01-01T00:00:00+00:00",
         "scored_at": "2026-01-01T00:00:01+00:00"},  # another model's
    ]  # fmt: skip
    assert scored_after_ms(values, "phish_lr") == pytest.approx([25.0])


def test_accuracy_and_labels_behind_come_from_the_served_decisions_and_snapshots() -> None:
    truth = [True, False, True, True, False, False]
    delay = 2  # label j goes out just before event j + 2 (River: revealed before row j + 2)
    served = {
        0: record(0, True, 0),  # right, nothing sent before it
        1: record(1, True, 0),  # wrong
        2: record(2, True, 0),  # right; label 0 was sent, not learned: 1 behind
        3: record(3, True, 2),  # right; labels 0 and 1 sent and learned: 0 behind
        # 4: no record (shed)
        5: record(5, True, 1),  # wrong; labels 0..3 sent, 1 learned: 3 behind
    }
    figures = served_figures(served, truth, delay)
    assert figures.missing == [4]
    assert figures.accuracy == pytest.approx(3 / 5)
    assert figures.behind == {0: 0, 1: 0, 2: 1, 3: 0, 5: 3}
    assert figures.accuracy_per_pass(3) == pytest.approx([2 / 3, 1 / 2])


def test_per_pass_accuracy_is_recovered_from_the_running_figure() -> None:
    # 80% on the first pass, 90% on the second: 85% after both.
    assert per_pass_from_cumulative([0.8, 0.85]) == pytest.approx([0.8, 0.9])
    assert per_pass_from_cumulative([]) == []


def test_river_reference_is_progressive_val_score_over_the_concatenated_stream() -> None:
    from river import datasets, evaluate, metrics

    from models.online import build_river_model

    online = load_spec(PHISHING_SPEC).online
    assert online is not None
    one = river_reference(online, delay=50)
    direct = evaluate.progressive_val_score(
        datasets.Phishing(), build_river_model(online), metrics.Accuracy(), delay=50
    )
    assert one.whole == pytest.approx(direct.get(), abs=1e-12)
    assert one.per_pass == pytest.approx([one.whole])

    two = river_reference(online, delay=50, passes=2)
    twice = evaluate.progressive_val_score(
        stream(2), build_river_model(online), metrics.Accuracy(), delay=50
    )
    assert two.whole == pytest.approx(twice.get(), abs=1e-12)
    assert two.per_pass[0] == pytest.approx(one.whole, abs=1e-12)  # the same first pass
    assert sum(two.per_pass) / 2 == pytest.approx(two.whole, abs=1e-12)
    assert two.per_pass[1] > two.per_pass[0]  # it has seen these pages before


def test_histogram_buckets_and_shares_from_scraped_samples() -> None:
    labels = (("model", "m"), ("pipeline", "p"))
    name = "streamscore_online_snapshot_age_seconds_bucket"
    samples = {
        (name, (*labels, ("le", "0.05"))): 9.0,
        (name, (*labels, ("le", "0.1"))): 10.0,
        (name, (*labels, ("le", "+Inf"))): 12.0,
        (name, (("le", "+Inf"), ("model", "other"), ("pipeline", "p"))): 100.0,
    }
    got = buckets(samples, "streamscore_online_snapshot_age_seconds", pipeline="p", model="m")
    assert got == {0.05: 9.0, 0.1: 10.0, math.inf: 12.0}
    assert share_within(got, 0.05) == pytest.approx(0.75)
    assert math.isnan(share_within({}, 0.05))


def test_spread_names_min_median_p90_and_max() -> None:
    assert spread(range(-1, 11)) == pytest.approx({"min": -1, "median": 4.5, "p90": 8.9, "max": 10})
    assert all(math.isnan(v) for v in spread([]).values())


def test_the_report_names_each_figure_and_the_target() -> None:
    truth = [True, False] * 4
    served = {k: record(k, truth[k] if k != 5 else not truth[k], k) for k in range(8)}
    figures = served_figures(served, truth, delay=1)
    reference = Reference(whole=0.9, per_pass=[0.85, 0.95])
    pipeline = (("model", "phish_river"), ("pipeline", "p"))
    samples = {
        ("streamscore_labels_total", (("outcome", "joined"), ("pipeline", "p"))): 8.0,
        ("streamscore_shadow_shed_events_total", pipeline): 0.0,
        ("streamscore_online_metric", (("metric", "accuracy"), *pipeline)): 0.875,
    }
    report = summarize(
        Plan(rate=2000, delay=1, passes=2),
        4,
        figures,
        reference,
        samples,
        {"pipeline": "p", "model": "phish_river"},
        Replayed(events=8, labels=8, seconds=0.0035, max_lag_seconds=0.001),
    )
    assert report["replay"]["events_per_second"] == pytest.approx(2000)
    assert report["served_accuracy"] == pytest.approx(7 / 8)
    assert report["difference_points"] == pytest.approx(-2.5)
    assert report["met"] is False  # 2.5 points off, the target is 2
    assert [p["served"] for p in report["passes"]] == pytest.approx([1.0, 0.75])
    assert report["median_pass_difference_points"] == pytest.approx((15 - 20) / 2)
    assert report["labels"]["joined"] == 8 and report["labels"]["orphan"] == 0
    assert report["reported_accuracy"] == pytest.approx(0.875)
    assert report["as_learned_accuracy"] is None  # absent from the scrape, not 0
    assert set(report["labels_behind"].values()) == {0.0}  # as fresh as River
    report.update(
        command="python -m load_tests.online_accuracy",
        commit="abc1234",
        broker="kafka",
        started="2026-01-01T00:00:00+00:00",
        cpus=2,
        load_average_1min={"before": 1.0, "after": 2.0},
    )
    text = markdown(report)
    assert "**87.5%**" in text
    assert "-2.50 points (not met)" in text
    assert "| 2 | 75.0% | 95.0% | -20.00 |" in text


def test_progressive_decisions_reproduce_river_and_differ_from_the_service_only_on_ties() -> None:
    online = load_spec(PHISHING_SPEC).online
    assert online is not None
    river = progressive_decisions(online, 50, threshold=None)
    # The loop is River's own progressive validation: the same accuracy to the last row.
    assert np.mean(river) == pytest.approx(river_reference(online, 50).whole, abs=1e-12)
    service = progressive_decisions(online, 50, threshold=0.5)
    differ = [j for j, (a, b) in enumerate(zip(river, service, strict=True)) if a != b]
    assert differ and all(j < 50 for j in differ)  # the untrained model's ties, nothing else


def test_decisions_at_the_served_staleness_are_progressive_validation_when_it_is_fixed() -> None:
    online = load_spec(PHISHING_SPEC).online
    assert online is not None
    delay = 50
    fixed = progressive_decisions(online, delay, threshold=0.5)
    learned = {k: max(0, k - delay + 1) for k in range(len(fixed))}
    assert decisions_at_served_staleness(online, learned) == dict(enumerate(fixed))
    # Staler snapshots decide differently (and worse): the staleness is what is replayed.
    stale = decisions_at_served_staleness(online, {k: max(0, k - 400) for k in learned})
    assert np.mean(list(stale.values())) < np.mean(fixed)
