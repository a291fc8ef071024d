"""The spec's ``monitoring:`` section: how the scoring worker watches its data drift.

>>> MonitoringSpec.model_validate({"window": {"seconds": 300}}).window
WindowSpec(events=None, seconds=300.0)
>>> MonitoringSpec().drift
DriftSpec(warn=0.1, alert=0.25)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The topic name pattern of streams/spec.py (a Kafka topic name).
TOPIC_PATTERN = r"^[A-Za-z0-9._-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowSpec(_Strict):
    """A drift window: a number of scored events, or a time span (exactly one)."""

    events: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="A window closes when this many scored events were counted (exactly:"
        " a batch is split between two windows).",
    )
    seconds: float | None = Field(
        default=None,
        gt=0,
        le=7 * 24 * 3600,
        description="A window closes with the first batch scored this long after the"
        " window's first one (a worker without traffic closes none).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default(cls, raw: object) -> object:
        return {"events": 10_000} if raw == {} else raw

    @model_validator(mode="after")
    def _one(self) -> WindowSpec:
        if (self.events is None) == (self.seconds is None):
            msg = "give exactly one of 'events' or 'seconds'"
            raise ValueError(msg)
        return self


class DriftSpec(_Strict):
    """Population stability index thresholds (the usual ones: below 0.1 the distributions
    are alike, 0.1-0.25 a moderate shift, above 0.25 a significant one)."""

    warn: float = Field(default=0.1, gt=0, description="PSI at or above: a moderate shift.")
    alert: float = Field(
        default=0.25, gt=0, description="PSI above: significant drift; StreamscoreFeatureDrift."
    )

    @model_validator(mode="after")
    def _ordered(self) -> DriftSpec:
        if self.warn > self.alert:
            msg = f"warn {self.warn} is above alert {self.alert}"
            raise ValueError(msg)
        return self


class MonitoringSpec(_Strict):
    """Drift of the served inputs and scores against the primary's training reference."""

    window: WindowSpec = Field(default_factory=lambda: WindowSpec(events=10_000))
    drift: DriftSpec = DriftSpec()
    topic: str | None = Field(
        default=None,
        pattern=TOPIC_PATTERN,
        description="Where each closed window's drift record goes; '<pipeline>-monitoring'"
        " when absent.",
    )
    enabled: bool = Field(
        default=True,
        description="false: the scoring worker keeps no monitoring windows (no drift"
        " counting, PSI series or monitoring records); the load test measures its cost so.",
    )
