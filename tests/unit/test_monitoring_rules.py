"""The alert thresholds come from the spec's ``slo:`` section, rendered into the rules file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from streams.cli.main import app
from streams.errors import SpecError
from streams.monitoring.rules import DRIFT_THRESHOLDS, THRESHOLDS, render_rules
from streams.monitoring.spec import DriftSpec, MonitoringSpec
from streams.spec import SloSpec, load_spec, load_spec_text
from tests.unit.test_dashboards_static import RULES

ROOT = Path(__file__).resolve().parents[2]
DEMO_SPEC = "streams/specs/card_fraud.yaml"


def _threshold_exprs(text: str) -> dict[str, str]:
    rules = yaml.safe_load(text)["groups"][0]["rules"]
    wanted = THRESHOLDS.keys() | DRIFT_THRESHOLDS.keys()
    return {rule["record"]: rule["expr"] for rule in rules if rule.get("record") in wanted}


def test_the_committed_rules_are_the_rendering_of_the_demo_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    rendered = render_rules([load_spec(DEMO_SPEC)], [DEMO_SPEC])
    assert RULES.read_text() == rendered, (
        "monitoring/prometheus/rules/streamscore.yml is stale: run"
        f" `streamscore monitoring rules --spec {DEMO_SPEC} > {RULES.relative_to(ROOT)}`"
    )


def test_the_cli_prints_the_same_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["monitoring", "rules", "--spec", DEMO_SPEC])
    assert result.exit_code == 0, result.output
    assert result.stdout == RULES.read_text()


def test_defaults_clear_the_demo_traffic() -> None:
    """The demo measures a p99 of ~50-150 ms and sends 1% bad events on purpose."""
    slo = SloSpec()
    assert slo.end_to_end_p99_seconds >= 3 * 0.150
    assert slo.dead_letter_ratio >= 3 * 0.01
    assert 0 < slo.label_coverage_ratio < 0.9


def test_each_pipeline_gets_its_own_thresholds_and_the_rest_the_defaults() -> None:
    demo = load_spec(ROOT / DEMO_SPEC)
    strict = demo.model_copy(
        update={
            "name": "strict",
            "slo": SloSpec(end_to_end_p99_seconds=0.1, dead_letter_ratio=0.002),
        }
    )
    exprs = _threshold_exprs(render_rules([demo, strict]))
    latency = exprs["pipeline:streamscore_end_to_end_latency_seconds:slo_p99"]
    assert '0.1 * group by (pipeline) (streamscore_events_total{pipeline="strict"})' in latency
    assert latency.rstrip().endswith("or 0.5 * group by (pipeline) (streamscore_events_total)")
    assert (
        '0.002 * group by (pipeline) (streamscore_events_total{pipeline="strict"})'
        in (exprs["pipeline:streamscore_dead_letters:slo_ratio"])
    )


def test_the_same_pipeline_twice_is_refused() -> None:
    demo = load_spec(ROOT / DEMO_SPEC)
    with pytest.raises(ValueError, match="pipeline names repeat"):
        render_rules([demo, demo])


def test_the_dead_letter_alert_does_not_count_invalid_labels() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    record = "pipeline:streamscore_dead_letters:ratio_rate5m"
    (ratio,) = [rule for rule in rules if rule.get("record") == record]
    assert 'stage!="label"' in ratio["expr"]


@pytest.mark.parametrize(
    ("slo", "where"),
    [
        ({"end_to_end_p99_seconds": 0}, "slo.end_to_end_p99_seconds"),
        ({"dead_letter_ratio": 1.5}, "slo.dead_letter_ratio"),
        ({"label_coverage_ratio": -0.1}, "slo.label_coverage_ratio"),
        ({"p99": 0.2}, "slo.p99"),
    ],
)
def test_an_invalid_slo_names_the_field(slo: dict[str, float], where: str) -> None:
    raw = yaml.safe_load((ROOT / DEMO_SPEC).read_text())
    raw["slo"] = slo
    with pytest.raises(SpecError, match=where.replace(".", r"\.")):
        load_spec_text(yaml.safe_dump(raw), base_dir=ROOT / "streams" / "specs")


def test_each_pipeline_gets_its_own_drift_thresholds() -> None:
    demo = load_spec(ROOT / DEMO_SPEC)
    strict = demo.model_copy(
        update={
            "name": "strict",
            "monitoring": MonitoringSpec(drift=DriftSpec(warn=0.05, alert=0.15)),
        }
    )
    exprs = _threshold_exprs(render_rules([demo, strict]))
    alert = exprs["pipeline:streamscore_drift_psi:alert_threshold"]
    assert '0.15 * group by (pipeline) (streamscore_events_total{pipeline="strict"})' in alert
    assert '0.25 * group by (pipeline) (streamscore_events_total{pipeline="card_fraud"})' in alert
    assert alert.rstrip().endswith("or 0.25 * group by (pipeline) (streamscore_events_total)")
    warn = exprs["pipeline:streamscore_drift_psi:warn_threshold"]
    assert '0.05 * group by (pipeline) (streamscore_events_total{pipeline="strict"})' in warn


def test_the_drift_alerts_compare_with_the_alert_threshold() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    alerts = {rule["alert"]: rule["expr"] for rule in rules if "alert" in rule}
    for name in ("StreamscoreFeatureDrift", "StreamscoreScoreDrift"):
        assert "pipeline:streamscore_drift_psi:alert_threshold" in alerts[name]


def test_each_pipeline_gets_its_own_volume_thresholds_and_the_rest_the_defaults() -> None:
    from streams.monitoring.rules import VOLUME_THRESHOLDS
    from streams.monitoring.spec import VolumeSpec

    demo = load_spec(ROOT / DEMO_SPEC)
    bursty = demo.model_copy(
        update={
            "name": "bursty",
            "monitoring": MonitoringSpec(volume=VolumeSpec(drop=0.2, spike=5)),
        }
    )
    rules = yaml.safe_load(render_rules([demo, bursty]))["groups"][0]["rules"]
    exprs = {rule["record"]: rule["expr"] for rule in rules if "record" in rule}
    drop = exprs["pipeline:streamscore_events:volume_drop_ratio"]
    assert '0.2 * group by (pipeline) (streamscore_events_total{pipeline="bursty"})' in drop
    assert '0.5 * group by (pipeline) (streamscore_events_total{pipeline="card_fraud"})' in drop
    assert drop.endswith("or 0.5 * group by (pipeline) (streamscore_events_total)")
    spike = exprs["pipeline:streamscore_events:volume_spike_ratio"]
    assert '5 * group by (pipeline) (streamscore_events_total{pipeline="bursty"})' in spike
    assert set(VOLUME_THRESHOLDS) <= exprs.keys()
    # the baseline reads each of the 7 previous days, at the same minutes of the day
    baseline = exprs["pipeline:streamscore_events:rate_baseline"]
    assert [f"offset {d}d" in baseline for d in range(1, 9)] == [True] * 7 + [False]
