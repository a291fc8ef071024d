"""The guard: what the learner decides, label batch by label batch, about a new version that
serves: a canary, or the version the primary's alias just moved to (a promotion).

The learner (``streams.learning.learner``) hands the guard every label it learns, joined to
the score each arm *served* (``streams.learning.join.joined_record``), and after each
checkpoint the registry's aliases (``streams.actions.rollback`` reads them and acts). Two
watches, each a window of served labels of the new version (the *candidate*) against a
*baseline*:

- **canary** (while ``model.canary``'s alias names a version): the candidate is the latest
  ``min_labels`` labels the canary arm served (``<model>@canary`` of that version), the
  baseline the latest ``min_labels`` the primary served meanwhile. Judged after every batch
  once both windows are full, for as long as the canary serves.
- **promotion** (the primary's alias moved from P to N while the guard looked): the
  candidate is the first ``min_labels`` labels N served, the baseline the last ``min_labels``
  P served before the move (the guard keeps each primary version's latest labels, so it has
  them when the alias moves). Judged once, when N's window is full; a baseline with fewer
  labels cannot judge (the watch ends, said in the log).

A candidate worse than its baseline by more than the margin (``actions.guard``; direction
aware: accuracy and ROC AUC higher is better, log loss, MAE and RMSE lower) gets a
``rollback`` verdict. A version the guard itself rolled the alias back to is not watched, and
neither is the alias's version when the guard first looks (no baseline to judge it on).

The state (windows, watches, the alias last seen) is JSON data, checkpointed with the
learner's in one atomic write, so a replayed label batch is not counted twice and a new
owner of the labels resumes the watches.

>>> from streams.actions.spec import GuardSpec
>>> guard = Guard("m", "champion", "canary", GuardSpec(min_labels=30), "accuracy", 0.5)
>>> guard.follow({"champion": 1, "canary": 2})
>>> right = [{"scores": {"m": 0.9}, "versions": {"m": 1}, "label": 1}] * 30
>>> wrong = [{"scores": {"m@canary": 0.1}, "versions": {"m@canary": 2}, "label": 1}] * 30
>>> guard.observe(right + wrong)
>>> [(v.watch.kind, v.rollback, v.candidate, v.baseline) for v in guard.verdicts()]
[('canary', True, 0.0, 1.0)]
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from streams.actions.compare import served_figure
from streams.actions.spec import LOWER_IS_BETTER, GuardSpec, PromoteMetric
from streams.errors import StreamscoreError
from streams.scoring.canary import arm_model_name

WatchKind = Literal["canary", "promotion"]
WATCHES: tuple[WatchKind, ...] = ("canary", "promotion")
#: Primary versions whose latest labels are kept: the current one, and the one before it
#: (whose late labels still arrive after a move).
KEPT_VERSIONS = 2


class GuardStateError(StreamscoreError):
    """Stored guard state that cannot be restored (not ours, another layout)."""


class ServedWindow:
    """The latest ``size`` labels one arm served, with its scores."""

    def __init__(self, size: int) -> None:
        self.scores: collections.deque[float] = collections.deque(maxlen=size)
        self.labels: collections.deque[float] = collections.deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def full(self) -> bool:
        return len(self.labels) == self.labels.maxlen

    def add(self, score: float, label: float) -> None:
        # Rounded once, here: the window is checkpointed with every label batch, and 6
        # decimals keep that small, judge the same, and let a restored window equal this one.
        self.scores.append(round(score, 6))
        self.labels.append(label)

    def copy(self) -> ServedWindow:
        out = ServedWindow(self.labels.maxlen or 1)
        out.scores.extend(self.scores)
        out.labels.extend(self.labels)
        return out

    def figure(self, metric: PromoteMetric, threshold: float) -> float | None:
        """``metric`` over the window; None while it cannot be told (empty; ROC AUC with a
        single class)."""
        if not self.labels:
            return None
        s = np.fromiter(self.scores, dtype=np.float64, count=len(self.scores))
        y = np.fromiter(self.labels, dtype=np.float64, count=len(self.labels))
        return served_figure(metric, s, y, threshold)

    def to_data(self) -> list[list[float]]:
        return [list(self.scores), list(self.labels)]

    @classmethod
    def from_data(cls, data: Any, size: int) -> ServedWindow:
        if not (isinstance(data, list) and len(data) == 2 and len(data[0]) == len(data[1])):
            msg = f"a window is [scores, labels] of equal length, got {str(data)[:60]}"
            raise GuardStateError(msg)
        out = cls(size)
        try:
            out.scores.extend(float(v) for v in data[0])
            out.labels.extend(float(v) for v in data[1])
        except (TypeError, ValueError) as exc:
            msg = f"a window holds numbers only: {exc}"
            raise GuardStateError(msg) from exc
        return out


@dataclass
class Watch:
    kind: WatchKind
    version: int  # the version under watch
    previous: int | None  # a promotion's: the version the alias goes back to
    candidate: ServedWindow
    baseline: ServedWindow

    def to_data(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "version": self.version, "previous": self.previous,
            "candidate": self.candidate.to_data(), "baseline": self.baseline.to_data(),
        }  # fmt: skip

    @classmethod
    def from_data(cls, data: Any, size: int) -> Watch:
        try:
            kind, version, previous = data["kind"], data["version"], data["previous"]
            candidate, baseline = data["candidate"], data["baseline"]
        except (KeyError, TypeError) as exc:
            msg = f"a watch lacks {exc}"
            raise GuardStateError(msg) from exc
        if kind not in WATCHES or type(version) is not int:
            msg = f"a watch of kind {kind!r:.30} on version {version!r:.30}"
            raise GuardStateError(msg)
        if previous is not None and type(previous) is not int:
            msg = f"a watch's previous version {previous!r:.30}"
            raise GuardStateError(msg)
        return cls(
            kind, version, previous,
            ServedWindow.from_data(candidate, size), ServedWindow.from_data(baseline, size),
        )  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """The guard's judgement of one watch whose windows are full."""

    watch: Watch
    rollback: bool
    metric: PromoteMetric
    candidate: float
    baseline: float
    allowed: float  # the margin, in the metric's unit
    reason: str

    @property
    def worse_by(self) -> float:
        """How much worse the candidate served than the baseline (negative: better)."""
        if self.metric in LOWER_IS_BETTER:
            return self.candidate - self.baseline
        return self.baseline - self.candidate

    def evidence(self, model: str) -> dict[str, Any]:
        """What the ``rollback`` action records: n, the figure of each arm, the margin."""
        w = self.watch
        baseline_arm = f"{model}@{w.previous}" if w.kind == "promotion" else f"{model} (primary)"
        return {
            "watch": w.kind,
            "metric": self.metric,
            "labels": len(w.candidate),
            "baseline_labels": len(w.baseline),
            "arms": {
                f"{model}@{w.version}": round(self.candidate, 6),
                baseline_arm: round(self.baseline, 6),
            },
            # Oriented as a promotion's evidence is: positive = the candidate is better.
            "gain": round(-self.worse_by, 6),
            "margin": round(self.allowed, 6),
            "reason": self.reason,
        }


@dataclass
class Guard:
    """The guard's state and judgements (no I/O): see the module's docstring.

    ``alias`` is the primary's alias (None: pinned to a number, no promotion watch);
    ``canary_alias`` the canary's (None: the spec declares no canary).
    """

    model: str
    alias: str | None
    canary_alias: str | None
    policy: GuardSpec
    metric: PromoteMetric
    threshold: float
    primary_windows: dict[int, ServedWindow] = field(default_factory=dict)
    canary: Watch | None = None
    promotion: Watch | None = None
    seen: int | None = None  # the primary's alias when the guard last looked
    returned_to: int | None = None  # where the guard itself moved that alias back to
    notes: list[str] = field(default_factory=list)  # what changed, for the log

    @property
    def size(self) -> int:
        return self.policy.min_labels

    @property
    def watches(self) -> list[Watch]:
        return [w for w in (self.canary, self.promotion) if w is not None]

    def observe(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Labels just learned, in order (``joined_record``s)."""
        primary, canary = self.model, arm_model_name(self.model)
        for record in records:
            scores, versions = record["scores"], record.get("versions") or {}
            label = float(record["label"])
            if primary in scores:
                score, version = float(scores[primary]), versions.get(primary)
                if version is not None:
                    self._primary_window(version).add(score, label)
                if self.canary is not None:
                    self.canary.baseline.add(score, label)
                watch = self.promotion
                if watch is not None and version == watch.version and not watch.candidate.full:
                    watch.candidate.add(score, label)
            watch = self.canary
            if watch is not None and canary in scores and versions.get(canary) == watch.version:
                watch.candidate.add(float(scores[canary]), label)

    def _primary_window(self, version: int) -> ServedWindow:
        window = self.primary_windows.get(version)
        if window is None:
            window = self.primary_windows[version] = ServedWindow(self.size)
            while len(self.primary_windows) > KEPT_VERSIONS:
                oldest = next(iter(self.primary_windows))
                del self.primary_windows[oldest]
        return window

    def follow(self, aliases: Mapping[str, int]) -> None:
        """The registry's aliases of the model now: watches begin and end with them."""
        if self.canary_alias is not None:
            version = aliases.get(self.canary_alias)
            if version is None and self.canary is not None:
                self.notes.append(f"canary v{self.canary.version}: its alias is gone, unwatched")
                self.canary = None
            elif version is not None and (self.canary is None or self.canary.version != version):
                self.canary = Watch(
                    "canary", version, None, ServedWindow(self.size), ServedWindow(self.size)
                )
                self.notes.append(f"canary v{version}: watched")
        if self.alias is None:
            return
        now = aliases.get(self.alias)
        if now is None or now == self.seen:
            return
        before, self.seen = self.seen, now
        if before is None:  # the first look: no move seen, nothing to judge it against
            return
        if now == self.returned_to:
            self.returned_to = None
            return
        self.returned_to = None
        if not self.policy.promotions:
            return
        kept = self.primary_windows.get(before)
        baseline = kept.copy() if kept is not None else ServedWindow(self.size)
        self.promotion = Watch("promotion", now, before, ServedWindow(self.size), baseline)
        self.notes.append(
            f"{self.alias} moved v{before} -> v{now}: watched against v{before}'s last"
            f" {len(baseline)} labels"
        )

    def verdicts(self) -> list[Verdict]:
        """Judge every watch whose candidate window is full. A canary is judged again after
        each batch and stays watched while it passes; a promotion's watch ends with its
        verdict (or unjudged, when its baseline has too few labels: said in ``notes``)."""
        out = []
        for watch in self.watches:
            if not watch.candidate.full:
                continue
            if not watch.baseline.full:
                if watch.kind == "promotion":
                    self.notes.append(
                        f"{self.alias} v{watch.version}: not judged, v{watch.previous} served"
                        f" only {len(watch.baseline)} labels before the move (fewer than"
                        f" min_labels {self.size})"
                    )
                    self.promotion = None
                continue
            verdict = self._judge(watch)
            if verdict is None:
                continue
            if watch.kind == "promotion" and not verdict.rollback:
                self.promotion = None
                self.notes.append(f"{self.alias} v{watch.version} passed: {verdict.reason}")
            out.append(verdict)
        return out

    def _judge(self, watch: Watch) -> Verdict | None:
        metric = self.metric
        candidate = watch.candidate.figure(metric, self.threshold)
        baseline = watch.baseline.figure(metric, self.threshold)
        if candidate is None or baseline is None:
            return None  # e.g. ROC AUC over a single class: wait for more labels
        allowed = self.policy.allowed(metric, baseline)
        worse = candidate - baseline if metric in LOWER_IS_BETTER else baseline - candidate
        rollback = worse > allowed
        against = (
            f"v{watch.previous} before the move" if watch.kind == "promotion" else "the primary"
        )
        reason = (
            f"{metric} {candidate:.4g} served by v{watch.version} over {len(watch.candidate)}"
            f" labels against {baseline:.4g} by {against} over {len(watch.baseline)}:"
            f" {'worse' if worse > 0 else 'not worse'} by {max(worse, 0.0):.4g},"
            f" {'beyond' if rollback else 'within'} the margin {allowed:.4g}"
        )
        return Verdict(watch, rollback, metric, candidate, baseline, allowed, reason)

    def rolled_back(self, verdict: Verdict) -> None:
        """The rollback of ``verdict`` is done: its watch ends."""
        if verdict.watch.kind == "canary":
            self.canary = None
        else:
            self.promotion = None
            self.returned_to = verdict.watch.previous

    def abandon(self, watch: Watch) -> None:
        """Someone else moved the alias first: the watch ends, nothing is rolled back."""
        if watch is self.canary:
            self.canary = None
        if watch is self.promotion:
            self.promotion = None

    def clear(self) -> None:
        """Forget every window and watch (a learner starting without a checkpoint)."""
        self.primary_windows = {}
        self.canary = self.promotion = None
        self.seen = self.returned_to = None
        self.notes.clear()

    def to_data(self) -> dict[str, Any]:
        return {
            "primary": {str(v): w.to_data() for v, w in self.primary_windows.items()},
            "canary": self.canary.to_data() if self.canary is not None else None,
            "promotion": self.promotion.to_data() if self.promotion is not None else None,
            "seen": self.seen,
            "returned_to": self.returned_to,
        }

    def restore(self, data: Any) -> None:
        """Continue from ``to_data`` output (``GuardStateError`` if it is not that)."""
        if not isinstance(data, dict):
            msg = f"guard state is not an object: {str(data)[:60]}"
            raise GuardStateError(msg)
        size = self.size
        try:
            primary = {int(v): ServedWindow.from_data(w, size) for v, w in data["primary"].items()}
            canary = data["canary"]
            promotion = data["promotion"]
            seen, returned_to = data["seen"], data["returned_to"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"guard state lacks or mistypes {exc}"
            raise GuardStateError(msg) from exc
        if any(v is not None and type(v) is not int for v in (seen, returned_to)):
            msg = f"guard state's versions {seen!r:.20}, {returned_to!r:.20} are not numbers"
            raise GuardStateError(msg)
        self.primary_windows = primary
        self.canary = Watch.from_data(canary, size) if canary is not None else None
        self.promotion = Watch.from_data(promotion, size) if promotion is not None else None
        self.seen, self.returned_to = seen, returned_to
