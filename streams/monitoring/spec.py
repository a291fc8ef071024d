"""The spec's ``monitoring:`` section: how the scoring worker watches its data drift, and
the learner's sampled online/offline skew check (``skew``).

>>> MonitoringSpec.model_validate({"window": {"seconds": 300}}).window
WindowSpec(events=None, seconds=300.0)
>>> MonitoringSpec().drift
DriftSpec(warn=0.1, alert=0.25)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The topic name pattern of streams/spec.py (a Kafka topic name).
TOPIC_PATTERN = r"^[A-Za-z0-9._-]+$"
#: Realized accuracy's windows of prediction time when the drift window counts events.
DEFAULT_PERFORMANCE_BUCKET_SECONDS = 300.0
#: The most categories a slice field may declare: each value is a label value of the slice
#: metrics, for every model (and each slice field multiplies the learner's evaluation work).
MAX_SLICE_VALUES = 20


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

    def describe(self) -> str:
        """``10,000 events`` or ``60 s``: the window's size in words."""
        return f"{self.events:,} events" if self.events else f"{self.seconds:g} s"


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


class SkewSpec(_Strict):
    """The online/offline skew check: for a sample of labelled predictions, the learner
    asks Feast's offline store for the point-in-time features at the event's time and
    compares them with the ones the prediction served (streams/learning/skew_check.py)."""

    sample_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of labelled predictions checked, chosen by a hash of the event"
        " id (the same events whatever the worker); 0 (the default) turns the check off.",
    )
    tolerance: float = Field(
        default=1e-6,
        ge=0,
        lt=1,
        description="A feature differs when |online - offline| > tolerance x max(1,"
        " |online|, |offline|): relative, absolute below 1.",
    )
    max_in_flight: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Label batches whose offline lookup may be pending at once (they run"
        " one at a time, in a thread); a sample taken while this many wait is skipped and"
        " counted (streamscore_skew_unchecked_total{reason='busy'}).",
    )
    window_seconds: float = Field(
        default=300.0,
        gt=0,
        le=7 * 24 * 3600,
        description="streamscore_skew_max_abs_difference is the largest difference found"
        " by the checks of this trailing span.",
    )
    examples: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Recent mismatches kept in Redis for `streamscore skew`.",
    )

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0


class VolumeSpec(_Strict):
    """Events per second against the same time of day on the previous days (Prometheus
    recording rules; StreamscoreVolumeDrop and StreamscoreVolumeSpike compare with these)."""

    drop: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Alert when the rate falls below this share of its baseline.",
    )
    spike: float = Field(
        default=2.0,
        gt=1,
        le=1000,
        description="Alert when the rate rises above this multiple of its baseline.",
    )


class PerformanceSpec(_Strict):
    """Model performance without and with labels: the scoring worker's label-free accuracy
    estimate per window, and, in the learner, the realized accuracy per window of prediction
    time and an adaptive-window (ADWIN) detector of concept drift on each model's errors."""

    min_labels: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Labels a window of prediction time needs before its realized accuracy"
        " is published (the latest window that has them is the one shown).",
    )
    bucket_seconds: float | None = Field(
        default=None,
        gt=0,
        le=7 * 24 * 3600,
        description="Length of the windows of prediction time the realized accuracy is"
        " counted in; absent: monitoring.window.seconds, or 300 when the window counts"
        " events.",
    )
    adwin_delta: float = Field(
        default=0.002,
        gt=0,
        lt=1,
        description="ADWIN's significance on each model's error stream (River's default):"
        " smaller detects fewer, and later, changes.",
    )
    error_history: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Errors per model the learner checkpoints to rebuild its ADWIN after a"
        " restart (River cannot export one): the rebuilt window holds at most this many.",
    )


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
    skew: SkewSpec = Field(
        default_factory=lambda: SkewSpec(),
        description="The sampled online/offline skew check (off unless sample_rate > 0).",
    )
    quality: bool = Field(
        default=True,
        description="Data quality per model input column and window (missing, at the"
        " declared min/max, unknown category): gauges and a 'quality' record per window"
        " (streams/monitoring/quality.py). Cheap (a few numpy sums per batch); false: off.",
    )
    volume: VolumeSpec = Field(
        default=VolumeSpec(),
        description="Thresholds of the volume alerts (events/s against the same time of day"
        " on the previous days).",
    )
    performance: PerformanceSpec = Field(
        default_factory=PerformanceSpec,
        description="Estimated (label-free) and realized accuracy, concept drift on errors.",
    )

    @property
    def performance_bucket_seconds(self) -> float:
        """The windows of prediction time the learner counts realized accuracy in."""
        bucket = self.performance.bucket_seconds or self.window.seconds
        return bucket if bucket is not None else DEFAULT_PERFORMANCE_BUCKET_SECONDS

    slices: tuple[str, ...] = Field(
        default=(),
        description="Event fields (category or bool, at most MAX_SLICE_VALUES categories)"
        " whose every value gets its own label metrics per model and its own score drift;"
        " checked against event.fields by the pipeline spec.",
    )
    enabled: bool = Field(
        default=True,
        description="false: the scoring worker keeps no monitoring windows (no drift"
        " counting, PSI series or monitoring records, no data quality); the load test"
        " measures monitoring's cost so.",
    )
