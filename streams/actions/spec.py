"""The spec's ``actions:`` section: when a model may replace another, when the controller
retrains a challenger from the stream (``retrain``), and (later) a canary's guard.

>>> ActionsSpec().promote.min_labels
1000
>>> PromoteSpec.model_validate({"metric": "log_loss", "margin": 0.01}).metric
'log_loss'
>>> PromoteSpec().metric_for("regression")
'mae'
>>> ActionsSpec().retrain.enabled
False
>>> RetrainSpec.model_validate({"every_labels": 5000}).enabled
True
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.manifest import Task

PromoteMetric = Literal["accuracy", "log_loss", "roc_auc", "mae", "rmse"]
#: The metrics each task can compare on; the first is the default.
TASK_METRICS: dict[Task, tuple[PromoteMetric, ...]] = {
    "classification": ("log_loss", "accuracy", "roc_auc"),
    "regression": ("mae", "rmse"),
}
#: Metrics where lower is better (the comparison turns them so that a gain is positive).
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromoteSpec(_Strict):
    """``models promote --if-better`` (and the controller, with ``auto``): the candidate
    replaces the champion only when, on the same labelled events, the paired confidence
    interval of its gain in ``metric`` lies above ``margin``, and its guards hold."""

    metric: PromoteMetric | None = Field(
        default=None,
        description="What to compare: accuracy (at model.threshold, else 0.5), log_loss or"
        " roc_auc for classification; mae or rmse for regression. Absent: log_loss"
        " (classification) or mae (regression).",
    )
    min_labels: int = Field(
        default=1000,
        ge=30,
        le=1_000_000,
        description="Fewest labelled events scored by both models before a decision; fewer"
        " is a refusal ('too few labels').",
    )
    margin: float = Field(
        default=0.0,
        ge=0,
        description="How much better the candidate must be: the interval's lower bound of"
        " its gain (in the metric's unit, e.g. 0.01 = one accuracy point) must exceed it.",
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1.0, description="Two-sided level of the confidence interval."
    )
    resamples: int = Field(
        default=2000, ge=200, le=20_000, description="Bootstrap resamples (fixed seed)."
    )
    seed: int = Field(default=0, ge=0, description="The bootstrap's seed: a decision repeats.")
    evidence_labels: int = Field(
        default=20_000,
        ge=30,
        le=1_000_000,
        description="Most recent labelled events the learner keeps as evidence (each with"
        " the label and the score every registry model served for it).",
    )
    unserved_tolerance: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Guard: the share of labelled events the candidate served no score for"
        " (a shadow error or a shed batch) may exceed the champion's by at most this.",
    )
    max_latency_ratio: float = Field(
        default=1.5,
        ge=1.0,
        description="Guard: the candidate's mean inference time per event, as the service"
        " measured it, may be at most this times the champion's.",
    )
    auto: bool = Field(
        default=False,
        description="Let `streamscore controller` promote the challenger on its own when the"
        " same decision (actions.decision.decide_promotion) says yes; it records every"
        " promotion and refusal on the actions topic.",
    )

    @model_validator(mode="after")
    def _enough_kept(self) -> PromoteSpec:
        if self.evidence_labels < self.min_labels:
            msg = (
                f"evidence_labels {self.evidence_labels} is below min_labels {self.min_labels}:"
                " the evidence kept could never be enough"
            )
            raise ValueError(msg)
        return self

    def metric_for(self, task: Task) -> PromoteMetric:
        return self.metric if self.metric is not None else TASK_METRICS[task][0]


#: ``actions.guard.margin`` when absent: how much worse (absolute, in the metric's unit) a
#: new version may serve before the guard rolls it back. mae and rmse are in the target's
#: unit, which no default can know: theirs is relative (this share of the baseline's figure).
GUARD_MARGINS: dict[PromoteMetric, float] = {
    "accuracy": 0.02,
    "roc_auc": 0.02,
    "log_loss": 0.05,
    "mae": 0.10,
    "rmse": 0.10,
}


class GuardSpec(_Strict):
    """The learner's automatic rollback (``streams.actions.guard``): a canary, or a version
    the primary's alias just moved to, whose served ``metric`` over ``min_labels`` labels is
    worse than its baseline's by more than ``margin`` goes back (the canary alias removed;
    the primary's alias moved back to the previous version), recorded as a ``rollback``
    action decided by ``guard``.

    >>> GuardSpec().allowed("accuracy", 0.9)
    0.02
    >>> round(GuardSpec().allowed("mae", 120.0), 6)  # 10 % of the baseline's MAE
    12.0
    """

    enabled: bool = Field(
        default=True,
        description="Run the guard. It watches a canary when model.canary is declared and"
        " a move of the primary's alias (a promotion) when the primary follows one.",
    )
    promotions: bool = Field(
        default=True,
        description="Also watch a version the primary's alias moves to (false: canaries only).",
    )
    metric: PromoteMetric | None = Field(
        default=None,
        description="The served metric to judge on; absent: actions.promote's metric.",
    )
    min_labels: int = Field(
        default=1000,
        ge=30,
        le=100_000,
        description="Labels the new version must have served before it is judged (the"
        " guard window); the baseline is judged on as many. The guard compares point"
        " estimates: this is its only protection against noise.",
    )
    margin: float | None = Field(
        default=None,
        ge=0,
        description="How much worse than its baseline the new version may serve, in the"
        " metric's unit. Absent: 0.02 for accuracy and roc_auc, 0.05 for log_loss, and for"
        " mae and rmse 10% of the baseline's figure.",
    )

    def metric_for(self, task: Task, promote: PromoteSpec) -> PromoteMetric:
        return self.metric if self.metric is not None else promote.metric_for(task)

    def allowed(self, metric: PromoteMetric, baseline: float) -> float:
        """The margin in the metric's unit, against a baseline figure of ``baseline``."""
        if self.margin is not None:
            return self.margin
        if metric in ("mae", "rmse"):
            return GUARD_MARGINS[metric] * abs(baseline)
        return GUARD_MARGINS[metric]


class DriftTrigger(_Strict):
    """Retrain when the primary's drift is at alert level in ``windows`` consecutive drift
    records of the monitoring topic (its score's PSI or any column's)."""

    windows: int = Field(
        default=3, ge=1, le=100, description="Consecutive drift windows at alert level."
    )


class MetricFloor(_Strict):
    """Retrain when the primary's served rolling metric (the learner's evaluation) is worse
    than ``value``: below it for accuracy and roc_auc, above it for log_loss, mae, rmse."""

    metric: PromoteMetric = Field(description="A metric of the spec's task.")
    value: float = Field(description="The worst acceptable value of the metric.")
    min_labels: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Fewest labelled events in the evaluation's window before the floor is"
        " checked (a handful of labels says little).",
    )


class RetrainSpec(_Strict):
    """When ``streamscore controller`` retrains the primary's model from the stream (as
    ``streamscore train --from-stream`` does, registering a ``challenger``). Off unless a
    trigger is given; any trigger that holds starts a retrain."""

    every_labels: int | None = Field(
        default=None,
        ge=1,
        description="After this many new joined labels since the last retrain (or since the"
        " controller first ran).",
    )
    on_drift: DriftTrigger | None = Field(default=None, description="On held drift alerts.")
    metric_floor: MetricFloor | None = Field(
        default=None, description="On the primary's served metric under a floor."
    )
    min_interval_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="Least time between two retrains' starts, whatever the triggers say.",
    )
    window_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Train on the labelled records written in the last this many seconds"
        " (after a concept change, the recent ones); absent: the whole labelled topic.",
    )

    @property
    def enabled(self) -> bool:
        return any(t is not None for t in (self.every_labels, self.on_drift, self.metric_floor))


class ActionsSpec(_Strict):
    """What the service may do on its own evidence: promote a challenger (by a command, or
    by the controller with ``promote.auto``), retrain one (the controller) and roll back a
    worse canary or fresh promotion (``guard``, the learner)."""

    promote: PromoteSpec = PromoteSpec()
    retrain: RetrainSpec = RetrainSpec()
    guard: GuardSpec = GuardSpec()
    topic: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Where every action is recorded; '<pipeline>-actions' when absent.",
    )
