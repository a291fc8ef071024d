"""The guard's hands: after each label batch the learner checkpointed, read the model's
aliases, let the guard (``streams.actions.guard``) judge, and carry out a ``rollback``
verdict: the registry first (compare-and-set, so a person's or the controller's move in the
meantime wins and nothing is undone twice), then the action on the actions topic, the
counter and a loud log line.

- a canary: ``remove_alias(model, <canary alias>, expected=<its version>)``; every scoring
  worker follows the alias (about once a second) and serves the primary to every key again.
- a promotion: the previous version is checked as ``models rollback`` checks it (it loads
  and fits the spec), then ``set_alias(model, <alias>, previous, expected=<new>)``.

Registry calls are blocking file I/O and run in a thread; the action is published after the
registry changed (a failure to record is logged and counted as ``streamscore_guard_rollbacks_total``
still: the alias did move).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from models.errors import AliasMoved, ModelNotFound, ModelRefused, RegistryError
from models.fitness import Layout, load_checked
from models.registry import ModelRegistry
from streams.actions.guard import WATCHES, Guard, Verdict, Watch, WatchKind
from streams.actions.record import GUARD, action_record
from streams.metrics import Metrics
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)

#: Records ``[action]`` on the pipeline's actions topic (``streams.actions.record``).
Recorder = Callable[[list[dict[str, Any]]], Awaitable[None]]


def guard_for(spec: PipelineSpec) -> Guard | None:
    """The guard ``spec`` asks for (``actions.guard``), or None: off, or nothing to watch
    (no canary, and a primary pinned to a number or promotions unwatched)."""
    policy = spec.actions.guard
    primary = spec.model.version
    alias = None if primary.isdigit() else primary
    canary = spec.model.canary.version if spec.model.canary is not None else None
    if not policy.enabled or (canary is None and (alias is None or not policy.promotions)):
        return None
    threshold = spec.model.decision_threshold
    metric = policy.metric_for(spec.task, spec.actions.promote)
    return Guard(spec.model.name, alias, canary, policy, metric, threshold)


class GuardRunner:
    def __init__(
        self,
        spec: PipelineSpec,
        guard: Guard,
        registry: ModelRegistry,
        record: Recorder,
        metrics: Metrics,
    ) -> None:
        self.spec = spec
        self.guard = guard
        self.registry = registry
        self._record = record
        self._layouts = [Layout.of(spec)]
        self._last_error = ""
        name, model = spec.name, spec.model.name
        self._m_rollbacks = {w: metrics.guard_rollbacks.labels(name, model, w) for w in WATCHES}
        self._m_version = {w: metrics.guard_watched_version.labels(name, model, w) for w in WATCHES}
        self._m_labels = metrics.guard_labels
        self._m_metric = metrics.guard_metric
        self._publish()  # every series from the start (increase() and the panels need them)

    async def look(self) -> None:
        """Follow the registry's aliases (before a batch's labels are observed, so that the
        labels of a canary that just appeared count)."""
        try:
            aliases = await asyncio.to_thread(self.registry.aliases, self.guard.model)
        except RegistryError as exc:  # unreadable aliases: the watches stay as they are
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.warning("pipeline %s: guard: %s", self.spec.name, exc)
            return
        self._last_error = ""
        self.guard.follow(aliases)

    async def judge(self) -> None:
        """Judge the watches and carry out the rollbacks (after the batch's checkpoint)."""
        guard = self.guard
        for verdict in guard.verdicts():
            if verdict.rollback:
                await self._roll_back(verdict)
        for note in guard.notes:
            log.info("pipeline %s: guard: %s", self.spec.name, note)
        guard.notes.clear()
        self._publish()

    async def _roll_back(self, verdict: Verdict) -> None:
        guard, watch = self.guard, verdict.watch
        name = guard.model
        alias = guard.canary_alias if watch.kind == "canary" else guard.alias
        assert alias is not None
        try:
            await asyncio.to_thread(self._move_back, watch, alias)
        except (AliasMoved, ModelNotFound) as exc:  # moved by someone else first: theirs wins
            log.warning(
                "pipeline %s: guard: would roll back %s v%d but the alias moved: %s",
                self.spec.name, name, watch.version, exc,
            )  # fmt: skip
            guard.abandon(watch)
            return
        except (ModelRefused, RegistryError) as exc:  # tried again after the next batch
            log.error(
                "pipeline %s: guard: cannot roll back %s %r from v%d: %s",
                self.spec.name, name, alias, watch.version, exc,
            )  # fmt: skip
            return
        guard.rolled_back(verdict)
        self._m_rollbacks[watch.kind].inc()
        back = "removed" if watch.kind == "canary" else f"moved back to v{watch.previous}"
        log.error(
            "pipeline %s: AUTOMATIC ROLLBACK: model %s alias %r %s (was v%d): %s",
            self.spec.name, name, alias, back, watch.version, verdict.reason,
        )  # fmt: skip
        record = action_record(
            "rollback", pipeline=self.spec.name, model=name, alias=alias,
            from_version=watch.version, to_version=watch.previous, decided_by=GUARD,
            evidence=verdict.evidence(name), reasons=[verdict.reason],
        )  # fmt: skip
        try:
            await self._record([record])
        except Exception as exc:  # the alias did move: say so, never stop learning for it
            log.error(
                "pipeline %s: guard: the rollback of %s v%d is done but could not be recorded"
                " on %s: %r",
                self.spec.name, name, watch.version, self.spec.actions_topic, exc,
            )  # fmt: skip

    def _move_back(self, watch: Watch, alias: str) -> None:
        name = self.guard.model
        if watch.kind == "canary":
            self.registry.remove_alias(name, alias, expected=watch.version)
            return
        assert watch.previous is not None
        load_checked(self.registry, name, watch.previous, self._layouts)
        self.registry.set_alias(name, alias, watch.previous, expected=watch.version)

    def _publish(self) -> None:
        guard, name, model = self.guard, self.spec.name, self.spec.model.name
        watches: dict[WatchKind, Watch | None] = {
            "canary": guard.canary, "promotion": guard.promotion,
        }  # fmt: skip
        # Between promotions, the promotion's baseline is the one the next move would be
        # judged against: the latest labels of the version the primary's alias names.
        upcoming = guard.primary_windows.get(guard.seen) if guard.seen is not None else None
        for kind, watch in watches.items():
            self._m_version[kind].set(watch.version if watch is not None else 0)
            for arm in ("candidate", "baseline"):
                window = getattr(watch, arm) if watch is not None else None
                if watch is None and kind == "promotion" and arm == "baseline":
                    window = upcoming
                self._m_labels.labels(name, model, kind, arm).set(len(window) if window else 0)
                figure = window.figure(guard.metric, guard.threshold) if window else None
                labels = (name, model, kind, arm, guard.metric)
                if figure is not None:
                    self._m_metric.labels(*labels).set(figure)
                else:  # no figure: no series (not a misleading 0)
                    with contextlib.suppress(KeyError):
                        self._m_metric.remove(*labels)
