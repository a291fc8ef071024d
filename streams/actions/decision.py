"""Whether a candidate version may replace the champion: one plain function,
``decide_promotion``, for ``streamscore models promote --if-better`` now and for the
controller (``actions.promote.auto``) later. It reads nothing and changes nothing: the caller
brings the evidence and acts on the answer.

The candidate is promoted only when all of these hold, each failure one reason:

- **enough labels**: at least ``min_labels`` labelled events that both versions served;
- **better by the margin**: the lower bound of the confidence interval of its gain in the
  spec's metric (``streams.actions.compare``) is above ``margin``;
- **served as reliably** (guard ``unserved``): since the candidate first served a labelled
  event, the share of them it served no score for (a shadow error or a shed batch) is at
  most the champion's plus ``unserved_tolerance``. Dead letters are decided before any model
  scores, so they are the same for both versions and say nothing here;
- **as fast** (guard ``latency``): its mean inference time per event, as the service measured
  it, is at most ``max_latency_ratio`` times the champion's. Versions that never recorded
  one (a worker older than this) fail the guard: no evidence is not good evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.manifest import Task
from streams.actions.compare import Comparison, ComparisonError, compare
from streams.actions.evidence import (
    InferenceTime,
    LabelledEvent,
    paired,
    served_shares,
)
from streams.actions.spec import PromoteSpec


@dataclass(frozen=True)
class Guard:
    name: str  # "unserved" or "latency"
    ok: bool
    champion: float | None
    candidate: float | None
    rule: str  # what had to hold, in words


@dataclass(frozen=True)
class Decision:
    champion: str  # arms: "<model>@<version>"
    candidate: str
    promote: bool
    reasons: tuple[str, ...]  # why not (empty when promoted)
    comparison: Comparison | None  # None when no two paired labels exist
    guards: tuple[Guard, ...]
    policy: PromoteSpec

    def evidence(self) -> dict[str, Any]:
        """The decision as JSON data: what the actions record carries."""
        c = self.comparison
        policy = self.policy
        return {
            "champion": self.champion,
            "candidate": self.candidate,
            "metric": c.metric if c else None,
            "method": c.method if c else None,
            "labels": c.n if c else 0,
            "champion_value": _number(c.champion) if c else None,
            "candidate_value": _number(c.candidate) if c else None,
            "gain": _number(c.gain) if c else None,
            "interval": [_number(c.low), _number(c.high)] if c else None,
            "confidence": policy.confidence,
            "margin": policy.margin,
            "min_labels": policy.min_labels,
            "guards": [
                {
                    "name": g.name,
                    "ok": g.ok,
                    "champion": _number(g.champion),
                    "candidate": _number(g.candidate),
                    "rule": g.rule,
                }
                for g in self.guards
            ],
            "reasons": list(self.reasons),
        }


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def decide_promotion(
    events: Sequence[LabelledEvent],
    inference: Mapping[str, InferenceTime],
    *,
    champion: str,
    candidate: str,
    policy: PromoteSpec,
    task: Task,
    threshold: float = 0.5,
) -> Decision:
    """Decide on ``candidate`` against ``champion`` (arms) from the learner's ``events`` and
    the service's ``inference`` totals, under the spec's ``policy``."""
    metric = policy.metric_for(task)
    sample = paired(events, champion, candidate)
    reasons: list[str] = []
    comparison: Comparison | None = None
    try:
        comparison = compare(
            sample, metric, threshold=threshold, confidence=policy.confidence,
            resamples=policy.resamples, seed=policy.seed,
        )  # fmt: skip
    except ComparisonError as exc:
        reasons.append(str(exc).removeprefix("compare: "))
    if len(sample) < policy.min_labels:
        reasons.insert(
            0,
            f"too few labels: {len(sample)} labelled events served by both {champion} and"
            f" {candidate}, {policy.min_labels} needed (actions.promote.min_labels)",
        )
    elif comparison is not None and not comparison.low > policy.margin:
        reasons.append(
            f"not better by the margin: {metric} gain {comparison.gain:+.4g}, its"
            f" {policy.confidence:.0%} interval [{comparison.low:+.4g}, {comparison.high:+.4g}]"
            f" does not lie above {policy.margin:g} (actions.promote.margin)"
        )
    guards = (
        _unserved_guard(events, champion, candidate, policy),
        _latency_guard(inference, champion, candidate, policy),
    )
    reasons += [f"guard {g.name} failed: {g.rule}" for g in guards if not g.ok]
    return Decision(champion, candidate, not reasons, tuple(reasons), comparison, guards, policy)


def _unserved_guard(
    events: Sequence[LabelledEvent], champion: str, candidate: str, policy: PromoteSpec
) -> Guard:
    shares = served_shares(events, champion, candidate)
    if shares.events == 0:
        rule = f"{candidate} served no labelled event"
        return Guard("unserved", False, None, None, rule)
    unserved_champion, unserved_candidate = 1 - shares.champion, 1 - shares.candidate
    limit = unserved_champion + policy.unserved_tolerance
    rule = (
        f"unserved share of the {shares.events} labelled events since {candidate} first"
        f" served: {unserved_candidate:.2%} <= {unserved_champion:.2%} (champion)"
        f" + {policy.unserved_tolerance:g} (actions.promote.unserved_tolerance)"
    )
    return Guard(
        "unserved", unserved_candidate <= limit + 1e-12, unserved_champion, unserved_candidate, rule
    )


def _latency_guard(
    inference: Mapping[str, InferenceTime], champion: str, candidate: str, policy: PromoteSpec
) -> Guard:
    missing = [arm for arm in (champion, candidate) if arm not in inference]
    if missing:
        rule = f"no inference time recorded for {' and '.join(missing)}"
        return Guard("latency", False, None, None, rule)
    mine, theirs = inference[candidate].per_event, inference[champion].per_event
    rule = (
        f"mean inference per event {mine * 1e6:.1f} µs <= {policy.max_latency_ratio:g} x"
        f" {theirs * 1e6:.1f} µs (champion; actions.promote.max_latency_ratio)"
    )
    return Guard("latency", mine <= policy.max_latency_ratio * theirs, theirs, mine, rule)
