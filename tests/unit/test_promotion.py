"""Guarded promotion on controlled paired data: the comparison (paired bootstrap, DeLong),
the decision with its guards, the evidence entries the learner writes, the spec's
``actions:`` section and the history table."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
import yaml
from rich.console import Console
from sklearn.metrics import roc_auc_score

from streams.actions.commands import decision_table, history_table
from streams.actions.compare import ComparisonError, PairedSample, compare
from streams.actions.decision import decide_promotion
from streams.actions.evidence import (
    InferenceTime,
    LabelledEvent,
    _parsed,
    entries,
    paired,
    served_shares,
)
from streams.actions.record import action_record
from streams.actions.spec import PromoteSpec
from streams.errors import SpecError
from streams.scoring.canary import arm
from streams.spec import load_spec_text
from tests.unit.test_pipeline import SPEC

CHAMPION, CANDIDATE = arm("fraud", 1), arm("fraud", 2)
FAST = {CHAMPION: InferenceTime(0.010, 1000), CANDIDATE: InferenceTime(0.011, 1000)}


def labelled(n: int, seed: int = 0, *, edge: float) -> list[LabelledEvent]:
    """``n`` labelled events; each model's score is the label pulled towards 0.5 plus its
    own noise, the candidate's pulled ``edge`` less (negative: more, a worse model; 0: as
    good as the champion, with different noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(float)
    towards = labels - 0.5

    def scores(strength: float) -> list[float]:
        return np.clip(0.5 + strength * towards + rng.normal(0, 0.15, n), 0.01, 0.99).tolist()

    champion, candidate = scores(0.3), scores(0.3 + edge)
    return [
        LabelledEvent(f"e{i}", y, float(i), {CHAMPION: a, CANDIDATE: b})
        for i, (y, a, b) in enumerate(zip(labels.tolist(), champion, candidate, strict=True))
    ]


def decide(events, inference=FAST, **policy) -> object:
    return decide_promotion(
        events, inference, champion=CHAMPION, candidate=CANDIDATE,
        policy=PromoteSpec(**{"min_labels": 200, **policy}), task="classification",
    )  # fmt: skip


# --- the comparison --------------------------------------------------------------------


def test_a_clearly_better_candidate_is_promoted() -> None:
    decision = decide(labelled(1000, edge=0.2))
    assert decision.promote, decision.reasons
    c = decision.comparison
    assert c.metric == "log_loss" and c.method == "paired bootstrap" and c.n == 1000
    assert c.candidate < c.champion and c.gain > 0 and c.low > 0
    assert c.low <= c.gain <= c.high
    assert all(g.ok for g in decision.guards) and decision.reasons == ()


@pytest.mark.parametrize("edge", [-0.2, 0.0])
def test_a_worse_or_equal_candidate_is_refused(edge: float) -> None:
    decision = decide(labelled(1000, edge=edge))
    assert not decision.promote
    (reason,) = decision.reasons
    assert reason.startswith("not better by the margin: log_loss gain")
    assert "does not lie above 0 (actions.promote.margin)" in reason


def test_too_few_labels_are_refused_even_for_a_better_candidate() -> None:
    decision = decide(labelled(150, edge=0.2))
    assert not decision.promote
    assert decision.reasons[0] == (
        "too few labels: 150 labelled events served by both fraud@1 and fraud@2, 200 needed"
        " (actions.promote.min_labels)"
    )
    assert decision.comparison.n == 150  # still computed and shown


def test_the_margin_must_be_cleared_by_the_lower_bound() -> None:
    events = labelled(1000, edge=0.05)
    c = decide(events).comparison
    assert decide(events, margin=c.low / 2).promote
    assert not decide(events, margin=c.low * 1.01).promote


def test_the_same_seed_gives_the_same_interval_and_another_seed_a_close_one() -> None:
    sample = paired(labelled(500, edge=0.02), CHAMPION, CANDIDATE)
    first = compare(sample, "accuracy", seed=7, resamples=1000)
    assert compare(sample, "accuracy", seed=7, resamples=1000) == first
    other = compare(sample, "accuracy", seed=8, resamples=1000)
    assert other != first and abs(other.low - first.low) < 0.02


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "mae", "rmse"])
def test_each_bootstrapped_metric_orients_the_gain_so_that_positive_is_better(metric: str) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 2000).astype(float)
    noise = rng.normal(0, 0.3, 2000)
    good = np.clip(labels + 0.3 * noise, 0, 1)
    bad = np.clip(labels + noise, 0, 1)
    better = compare(PairedSample(labels, bad, good), metric, resamples=500)
    worse = compare(PairedSample(labels, good, bad), metric, resamples=500)
    assert better.low > 0 and worse.high < 0
    assert better.champion == worse.candidate


def test_the_bootstrap_works_in_blocks_without_changing_its_answer_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample = paired(labelled(400, edge=0.1), CHAMPION, CANDIDATE)
    whole = compare(sample, "log_loss", resamples=300)
    monkeypatch.setattr("streams.actions.compare.BLOCK_ENTRIES", 400 * 7)  # 7 rows a block
    blocks = compare(sample, "log_loss", resamples=300)
    assert blocks.gain == whole.gain and blocks.low > 0 and abs(blocks.low - whole.low) < 0.01


def test_delong_matches_the_roc_auc_and_finds_the_better_ranking() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(3000) < 0.3).astype(float)
    champion = np.round(0.3 * y + rng.normal(0, 0.3, 3000), 2)  # ties on purpose
    candidate = 0.5 * y + rng.normal(0, 0.3, 3000)
    c = compare(PairedSample(y, champion, candidate), "roc_auc")
    assert c.method == "DeLong"
    assert math.isclose(c.champion, roc_auc_score(y, champion))
    assert math.isclose(c.candidate, roc_auc_score(y, candidate))
    assert c.low > 0 and c.low < c.gain < c.high
    same = compare(PairedSample(y, champion, champion), "roc_auc")
    assert same.gain == 0 and same.low == 0 == same.high  # identical models: no difference
    with pytest.raises(ComparisonError, match="2 labels of each class, got 0 positive"):
        compare(PairedSample(np.zeros(10), champion[:10], candidate[:10]), "roc_auc")


# --- the guards --------------------------------------------------------------------------


def test_a_candidate_that_skipped_events_fails_the_unserved_guard() -> None:
    events = labelled(1000, edge=0.2)
    for event in events[500::10]:  # 50 of the 1000 in its span: a failing or shed shadow
        del event.scores[CANDIDATE]
    shares = served_shares(events, CHAMPION, CANDIDATE)
    assert (shares.events, shares.champion, shares.candidate) == (1000, 1.0, 0.95)
    decision = decide(events)
    assert not decision.promote
    assert decision.reasons == (
        "guard unserved failed: unserved share of the 1000 labelled events since fraud@2 first"
        " served: 5.00% <= 0.00% (champion) + 0 (actions.promote.unserved_tolerance)",
    )
    assert decide(events, unserved_tolerance=0.05).promote


def test_the_span_starts_when_the_candidate_first_served() -> None:
    events = labelled(1000, edge=0.2)
    for event in events[:300]:  # not shadowing yet: not its fault
        del event.scores[CANDIDATE]
    assert served_shares(events, CHAMPION, CANDIDATE).events == 700
    assert decide(events).promote


def test_a_slower_candidate_or_one_never_timed_fails_the_latency_guard() -> None:
    events = labelled(1000, edge=0.2)
    slow = {CHAMPION: InferenceTime(0.010, 1000), CANDIDATE: InferenceTime(0.016, 1000)}
    decision = decide(events, slow)
    assert not decision.promote
    assert decision.reasons == (
        "guard latency failed: mean inference per event 16.0 µs <= 1.5 x 10.0 µs (champion;"
        " actions.promote.max_latency_ratio)",
    )
    assert decide(events, slow, max_latency_ratio=2.0).promote
    untimed = decide(events, {CHAMPION: FAST[CHAMPION]})
    assert untimed.reasons == ("guard latency failed: no inference time recorded for fraud@2",)


def test_the_evidence_is_json_and_the_tables_show_it() -> None:
    decision = decide(labelled(1000, edge=0.2))
    evidence = orjson.loads(orjson.dumps(decision.evidence()))
    assert evidence["labels"] == 1000 and evidence["metric"] == "log_loss"
    assert evidence["interval"][0] > 0 and evidence["reasons"] == []
    assert [g["name"] for g in evidence["guards"]] == ["unserved", "latency"]
    console = Console(width=200, record=True)
    console.print(decision_table(decision, "card_fraud"))
    text = console.export_text()
    assert "fraud@2 against fraud@1 (card_fraud): promote" in text
    assert "paired labels" in text and "1000" in text and "log_loss" in text
    record = action_record(
        "refusal", pipeline="p", model="fraud", alias="champion", from_version=1,
        to_version=2, decided_by="ana@host", evidence=evidence, reasons=["too few labels"],
        at=0.0,
    )  # fmt: skip
    console = Console(width=200, record=True)
    console.print(history_table([record], "actions on p-actions"))
    text = console.export_text()
    assert "1970-01-01 00:00:00" in text and "refusal" in text and "1 → 2" in text
    assert "ana@host" in text and "log_loss gain +" in text and "too few labels" in text


# --- the evidence entries ----------------------------------------------------------------


def test_entries_keep_registry_versions_and_leave_out_the_online_model() -> None:
    records = [
        {"event_id": "a", "label": 1, "label_time": 5.0,
         "scores": {"fraud_gbt": 0.9, "fraud_lr": 0.7, "fraud_river": 0.6},
         "versions": {"fraud_gbt": 3, "fraud_lr": 1, "fraud_river": 41}},
        {"event_id": "b", "label": 0, "label_time": 6.0,
         "scores": {"fraud_gbt": 0.1, "fraud_lr": 0.2}, "versions": {"fraud_gbt": 3}},
        {"event_id": "c", "label": 0, "label_time": 7.0, "scores": {"fraud_gbt": 0.1}},
    ]  # fmt: skip
    out = [orjson.loads(e) for e in entries(records, skip="fraud_river")]
    assert out == [
        {"e": "a", "y": 1, "t": 5.0, "s": {"fraud_gbt@3": 0.9, "fraud_lr@1": 0.7}},
        {"e": "b", "y": 0, "t": 6.0, "s": {"fraud_gbt@3": 0.1}},  # fraud_lr: version unknown
    ]  # "c": no score with a known version, no entry
    event = _parsed(entries(records, skip=None)[0])
    assert event == LabelledEvent(
        "a", 1.0, 5.0, {"fraud_gbt@3": 0.9, "fraud_lr@1": 0.7, "fraud_river@41": 0.6}
    )
    assert _parsed(b"not json") is None and _parsed(b'{"e": "x", "y": [], "t": 0, "s": {}}') is None


def test_a_challenger_shadows_scores_are_evidence_for_its_registry_version() -> None:
    # The challenger shadow is named fraud_gbt@challenger in the join; promote compares
    # registry versions, so its scores must be fraud_gbt@<version>, paired with the champion.
    records = [
        {"event_id": "a", "label": 1, "label_time": 5.0,
         "scores": {"fraud_gbt": 0.6, "fraud_gbt@challenger": 0.9},
         "versions": {"fraud_gbt": 2, "fraud_gbt@challenger": 3}},
    ]  # fmt: skip
    (entry,) = [orjson.loads(e) for e in entries(records, skip=None)]
    assert entry["s"] == {"fraud_gbt@2": 0.6, "fraud_gbt@3": 0.9}


# --- the spec's actions: section --------------------------------------------------------


def spec_with(actions: dict, **top: object) -> str:
    doc = SPEC.model_dump(mode="json", exclude_none=True)
    doc.update(top)
    doc["actions"] = actions
    return yaml.safe_dump(doc)


def test_actions_defaults_topic_and_metric_per_task(tmp_path) -> None:
    assert SPEC.actions.promote == PromoteSpec() and not SPEC.actions.promote.auto
    assert SPEC.actions_topic == f"{SPEC.name}-actions"
    spec = load_spec_text(
        spec_with({"topic": "decisions", "promote": {"metric": "accuracy", "auto": True}}),
        tmp_path,
    )
    assert spec.actions_topic == "decisions" and spec.actions.promote.auto
    assert spec.actions.promote.metric_for(spec.task) == "accuracy"
    assert SPEC.actions.promote.metric_for("classification") == "log_loss"
    assert SPEC.actions.promote.metric_for("regression") == "mae"


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ({"promote": {"metric": "mae"}},
         "actions.promote.metric: 'mae' is not a classification metric; use log_loss, accuracy,"
         " roc_auc"),
        ({"promote": {"evidence_labels": 500}},
         "evidence_labels 500 is below min_labels 1000: the evidence kept could never be"
         " enough"),
        ({"promote": {"margin": -0.1}}, "actions.promote.margin: Input should be greater"),
        ({"promote": {"confidence": 1.0}}, "actions.promote.confidence: Input should be less"),
        ({"promote": {"metric": "f1"}}, "actions.promote.metric: Input should be"),
        ({"retrain": {"every": 5}}, "actions.retrain.every: Extra inputs are not permitted"),
        ({"topic": "bad topic"}, "actions.topic: String should match pattern"),
    ],
)  # fmt: skip
def test_bad_actions_are_refused_naming_the_field(actions: dict, message: str, tmp_path) -> None:
    text = spec_with(actions)
    with pytest.raises(SpecError, match="invalid pipeline spec") as error:
        load_spec_text(text, tmp_path)
    assert message in str(error.value)


def test_a_regression_pipeline_compares_on_its_own_metrics(tmp_path) -> None:
    doc = yaml.safe_load(spec_with({"promote": {"metric": "rmse"}}))
    doc["task"] = "regression"
    doc["model"].pop("threshold", None)
    spec = load_spec_text(yaml.safe_dump(doc), tmp_path)
    assert spec.actions.promote.metric_for(spec.task) == "rmse"
    doc["actions"] = {"promote": {"metric": "roc_auc"}}
    with pytest.raises(SpecError, match="'roc_auc' is not a regression metric; use mae, rmse"):
        load_spec_text(yaml.safe_dump(doc), tmp_path)


def test_the_counter_labels_each_record_by_a_known_action_or_other() -> None:
    from streams.actions.counter import counted_action

    assert counted_action(b'{"action": "refusal"}') == "refusal"
    assert counted_action(b'{"action": "retrain_started"}') == "retrain_started"
    assert counted_action(b'{"action": "teleport"}') == "other"  # until it is known
    assert counted_action(b"[1, 2]") == "other" and counted_action(None) == "other"
