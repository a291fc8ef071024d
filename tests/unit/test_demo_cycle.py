"""``demo --cycle``: the spec variant the controller runs on, and the summary's actions rows."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
from rich.console import Console

from streams.actions.controller import nothing_to_do
from streams.actions.record import action_record
from streams.cli.cycle import CYCLE_WINDOW_EVENTS, action_text, write_cycle_spec
from streams.cli.summary import ACTIONS_SHOWN, LiveSummary
from streams.spec import load_spec

SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"


def test_the_cycle_variant_validates_with_a_drift_trigger_and_auto_promotion(
    tmp_path: Path,
) -> None:
    original = load_spec(SPEC)
    assert nothing_to_do(original) is not None  # the demo spec alone gives a controller nothing

    path, variant = write_cycle_spec(SPEC, tmp_path / "elsewhere")

    assert path.parent == tmp_path / "elsewhere"
    assert load_spec(path) == variant
    assert nothing_to_do(variant) is None
    retrain = variant.actions.retrain
    assert retrain.on_drift is not None and retrain.on_drift.windows == 2
    assert retrain.min_interval_seconds >= 3600  # one retrain per demo, though drift goes on
    assert variant.actions.promote.auto
    assert variant.actions.promote.min_labels <= 300
    assert variant.monitoring.window.events == CYCLE_WINDOW_EVENTS
    assert variant.model.version == "champion" and variant.model.follow_challenger
    assert variant.labelled_topic is not None
    # Written elsewhere, its paths still name the demo's feature repo and dataset.
    assert variant.features.repo.resolve() == original.features.repo.resolve()
    assert variant.training is not None and original.training is not None
    assert variant.training.dataset.resolve() == original.training.dataset.resolve()
    # The rest is the demo's spec.
    assert variant.model_input == original.model_input
    assert variant.shadows == original.shadows


def decision(action: str, version: int, reasons: list[str]) -> dict[str, object]:
    evidence = {
        "metric": "log_loss", "labels": 812, "champion_value": 0.41,
        "candidate_value": 0.2345, "interval": [0.12, 0.2199], "reasons": reasons,
    }  # fmt: skip
    return action_record(
        action,  # type: ignore[arg-type]
        pipeline="card_fraud", model="fraud_gbt", alias="champion", from_version=1,
        to_version=version, decided_by="controller", evidence=evidence, reasons=reasons,
    )  # fmt: skip


def test_action_text_names_the_decision_metric_interval_and_labels() -> None:
    assert (
        action_text(decision("promotion", 2, []))
        == "promotion v2: log_loss 0.410 -> 0.234, gain CI [0.120, 0.220] on 812 labels"
    )
    refused = action_text(decision("refusal", 3, ["too few labels: 40 < 300"]))
    assert refused.startswith("refusal v3: log_loss")
    assert refused.endswith("(too few labels: 40 < 300)")
    retrain = action_record(
        "retrain_started", pipeline="card_fraud", model="fraud_gbt", alias="challenger",
        from_version=None, to_version=None, decided_by="controller",
        reasons=["drift at alert level in 2 windows"],
    )  # fmt: skip
    assert action_text(retrain) == "retrain_started (drift at alert level in 2 windows)"


def rendered(summary: LiveSummary) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(summary.table(1.0, 10, "consuming"))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_summary_shows_actions_only_with_an_actions_topic() -> None:
    spec = load_spec(SPEC)
    plain = LiveSummary(spec, kafka=None)  # type: ignore[arg-type]
    assert plain.actions_rows() == []
    assert "actions" not in rendered(plain)

    summary = LiveSummary(spec, kafka=None, actions_topic=spec.actions_topic)  # type: ignore[arg-type]
    assert summary.actions_rows() == [("actions", "none yet")]
    records = [
        action_record(
            "retrain_started", pipeline="card_fraud", model="fraud_gbt", alias="challenger",
            from_version=None, to_version=None, decided_by="controller", reasons=["drift"],
        ),
        action_record(
            "retrain_finished", pipeline="card_fraud", model="fraud_gbt", alias="challenger",
            from_version=None, to_version=2, decided_by="controller",
        ),
        decision("refusal", 2, ["too few labels: 40 < 300"]),
        decision("promotion", 2, []),
        decision("promotion", 3, []),
    ]  # fmt: skip
    for record in records:
        summary._take(spec.actions_topic, orjson.dumps(record), 0)

    rows = summary.actions_rows()
    assert len(rows) == ACTIONS_SHOWN
    assert rows[0][0] == "actions (5)"
    # the latest four, the oldest first
    shown = [text.split(":")[0].split(" (")[0] for _, text in rows]
    assert shown == ["retrain_finished v2", "refusal v2", "promotion v2", "promotion v3"]
    table = rendered(summary)
    assert "promotion v3: log_loss 0.410 -> 0.234, gain CI [0.120, 0.220] on 812 labels" in table
    assert "retrain_started" not in table
    assert "action=[promotion v3: log_loss" in summary.line(1, 1, "x")
    assert summary.counts.predictions == 0  # an action is not an output
