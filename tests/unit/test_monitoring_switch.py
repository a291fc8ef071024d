"""`monitoring.enabled: false` turns the scoring worker's drift monitor off (the load test
measures monitoring's cost so); on by default, with the serving version's reference."""

from __future__ import annotations

from pathlib import Path

from models.errors import ModelError
from streams.metrics import Metrics
from streams.monitoring.drift import DriftMonitor
from streams.runtime.worker import drift_monitor
from streams.spec import load_spec_text

SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"


class NoProfiles:
    """A registry whose versions have no readable profile (load_reference says None)."""

    def version(self, name: str, version: int) -> object:
        raise ModelError(f"{name} v{version}: no profile here")


def spec_with(monitoring: str):
    text = SPEC.read_text()
    start = text.index("\nmonitoring:")
    end = text.index("\n\n", start + 1)
    return load_spec_text(text[:start] + "\n" + monitoring + text[end:], SPEC.parent)


def test_monitoring_is_on_by_default_and_registers_the_serving_version() -> None:
    spec = spec_with("monitoring:\n  window: {events: 100}")
    assert spec.monitoring.enabled
    metrics = Metrics()
    drift = drift_monitor(spec, metrics, NoProfiles(), "fraud_gbt", 3)  # type: ignore[arg-type]
    assert isinstance(drift, DriftMonitor)
    assert ("fraud_gbt", 3) in drift._references


def test_enabled_false_gives_no_monitor() -> None:
    spec = spec_with("monitoring:\n  enabled: false")
    assert not spec.monitoring.enabled
    assert drift_monitor(spec, Metrics(), NoProfiles(), "fraud_gbt", 3) is None  # type: ignore[arg-type]
