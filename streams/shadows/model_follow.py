"""Which model version a worker serves, at start and as the primary's alias moves.

At start every model the spec names is loaded with ``models.fitness.load_serving``: the
version its alias points at if it loads and fits the spec, else the newest earlier version
of the alias that does (the worker says so in its log and in
``streamscore_model_refused_version``). Then, about once a second, an ``AliasFollower`` per
model on an alias (the primary and every shadow) asks whether its alias moved: a version
that loads and fits is swapped in between batches, and ``streamscore_model_info`` names it;
any other is refused, and the worker keeps serving what it has. Each refused
version is logged and counted once (``streamscore_model_refusals_total``), so a bad
promotion costs one warning per worker, not a crash of every worker following the alias.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from models.errors import ModelRefused, RegistryError
from models.fitness import REFUSAL_REASONS, Layout, Serving, load_checked, load_serving
from models.registry import ALIASES_FILE, ModelRegistry
from models.scorer import OnnxScorer
from models.watch import AliasWatcher, Signature, file_signature
from streams.metrics import Metrics
from streams.spec import ModelRef, PipelineSpec, ShadowRef

log = logging.getLogger(__name__)


def start_serving(
    registry: ModelRegistry, spec: PipelineSpec, ref: ModelRef | ShadowRef, metrics: Metrics
) -> Serving:
    """Load the version to serve for ``ref``; a refusal of its alias's version is logged
    and flagged in the metrics. ``NoServableVersion`` when nothing can serve."""
    serving = load_serving(registry, ref.name, ref.version, [Layout.of(spec)])
    if serving.alias is None:
        return serving  # pinned to a number: it serves or the worker does not start
    labels = (spec.name, ref.name, serving.alias)
    for reason in REFUSAL_REASONS:  # every series exists from the start (rate() needs it)
        metrics.model_refusals.labels(*labels, reason)
    refused = serving.refused
    metrics.model_refused_version.labels(*labels).set(0 if refused is None else refused.version)
    if refused is not None:
        metrics.model_refusals.labels(*labels, refused.reason).inc()
        skipped = "".join(f"; passed over {r}" for r in serving.passed_over)
        log.warning(
            "pipeline %s: %s; serving version %d instead, the newest earlier version of"
            " alias %r that loads and fits%s",
            spec.name, refused, serving.scorer.version, serving.alias, skipped,
        )  # fmt: skip
    return serving


class AliasFollower:
    """Follows a model's alias (the primary's unless ``ref`` names a shadow) from the
    version ``serving`` describes.

    ``check`` is blocking (it may load a model): run it off the event loop. It returns the
    new scorer to swap in, or None when there is nothing to swap.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        spec: PipelineSpec,
        serving: Serving,
        metrics: Metrics,
        ref: ModelRef | ShadowRef | None = None,
        role: str = "primary",
    ) -> None:
        name = (ref or spec.model).name
        if serving.alias is None or serving.alias_version is None:
            msg = f"pipeline {spec.name!r}: model {name!r} is pinned, not on an alias"
            raise ValueError(msg)
        self.registry = registry
        self.pipeline = spec.name
        self.name = name
        self.role = role
        self.alias = serving.alias
        self.scorer = serving.scorer
        self._layouts = [Layout.of(spec)]
        self._watcher = AliasWatcher(registry, self.name, self.alias, serving.alias_version)
        self._refused = {serving.refused.version} if serving.refused is not None else set()
        self._last_error = ""
        self._metrics = metrics
        self._m_refused_version = metrics.model_refused_version.labels(
            spec.name, self.name, self.alias
        )

    def check(self) -> OnnxScorer | None:
        try:
            target = self._watcher.check()
        except RegistryError as exc:  # alias removed, aliases.json unreadable: keep serving
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.warning(
                    "pipeline %s: cannot follow alias %r: %s; still serving version %d",
                    self.pipeline, self.alias, exc, self.scorer.version,
                )  # fmt: skip
            return None
        self._last_error = ""
        if target is None:
            return None
        if target == self.scorer.version:  # e.g. rolled back from a version it refused
            self._m_refused_version.set(0)
            log.info(
                "pipeline %s: model %s alias %r back at version %d, which it serves",
                self.pipeline, self.name, self.alias, target,
            )  # fmt: skip
            return None
        try:
            new = load_checked(self.registry, self.name, target, self._layouts)
        except ModelRefused as refused:
            self._refuse(refused)
            return None
        old, self.scorer = self.scorer, new
        self._m_refused_version.set(0)
        info = self._metrics.model_info
        info.remove(self.pipeline, self.role, old.name, str(old.version))
        info.labels(self.pipeline, self.role, new.name, str(new.version)).set(1)
        log.info("%s model %s: v%s -> v%s", self.role, new.name, old.version, new.version)
        return new

    def _refuse(self, refused: ModelRefused) -> None:
        self._m_refused_version.set(refused.version)
        if refused.version in self._refused:  # warned once already: the alias came back to it
            log.info(
                "pipeline %s: alias %r back at version %d, refused before; still serving %d",
                self.pipeline, self.alias, refused.version, self.scorer.version,
            )  # fmt: skip
            return
        self._refused.add(refused.version)
        self._metrics.model_refusals.labels(
            self.pipeline, self.name, self.alias, refused.reason
        ).inc()
        log.warning(
            "pipeline %s: alias %r moved to a version it refuses: %s; still serving version %d",
            self.pipeline, self.alias, refused, self.scorer.version,
        )  # fmt: skip


@dataclass(frozen=True)
class WatchedChange:
    """What the alias did: a version to serve now, or ``None``: the alias was removed."""

    scorer: OnnxScorer | None


class OptionalAliasWatch:
    """Where an alias of the primary's model points that may come and go (``challenger``,
    ``canary``): ``check`` says when it appears, moves to a version that loads and fits, or
    is removed. A version it refuses is logged and counted once, and whatever served before
    keeps serving. ``check`` is blocking (it may load a model): run it off the event loop."""

    def __init__(
        self, registry: ModelRegistry, spec: PipelineSpec, metrics: Metrics, alias: str,
        role: str,
    ) -> None:  # fmt: skip
        self.registry = registry
        self.alias = alias
        self.role = role
        self.pipeline = spec.name
        self.name = spec.model.name
        self.version: int | None = None  # the version shadowed now
        self._path = registry.root / self.name / ALIASES_FILE
        self._seen: Signature | str = "unread"
        self._layouts = [Layout.of(spec)]
        self._refused: set[int] = set()
        self._last_error = ""
        self._m_refusals = metrics.model_refusals
        self._m_refused_version = metrics.model_refused_version.labels(spec.name, self.name, alias)

    def check(self) -> WatchedChange | None:
        signature = self._signature()
        if signature == self._seen:
            return None
        self._seen = signature
        try:
            target = self.registry.aliases(self.name).get(self.alias) if signature else None
        except RegistryError as exc:  # aliases.json unreadable: keep what is shadowed
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.warning(
                    "pipeline %s: cannot read the %s alias: %s", self.pipeline, self.alias, exc
                )
            return None
        self._last_error = ""
        if target == self.version:
            return None
        if target is None:
            log.info(
                "pipeline %s: %s alias of %s removed; v%s no longer serves as %s",
                self.pipeline, self.alias, self.name, self.version, self.role,
            )  # fmt: skip
            self.version = None
            self._m_refused_version.set(0)
            return WatchedChange(None)
        try:
            scorer = load_checked(self.registry, self.name, target, self._layouts)
        except ModelRefused as refused:
            self._refuse(refused)
            return None
        log.info(
            "pipeline %s: %s v%d serves as %s (alias %r)",
            self.pipeline, self.name, target, self.role, self.alias,
        )  # fmt: skip
        self.version = target
        self._m_refused_version.set(0)
        return WatchedChange(scorer)

    def _refuse(self, refused: ModelRefused) -> None:
        self._m_refused_version.set(refused.version)
        if refused.version in self._refused:
            return  # warned once already
        self._refused.add(refused.version)
        self._m_refusals.labels(self.pipeline, self.name, self.alias, refused.reason).inc()
        log.warning(
            "pipeline %s: alias %r moved to a version it refuses: %s; %s",
            self.pipeline, self.alias, refused,
            f"still serving v{self.version}" if self.version else f"no {self.role} serves",
        )  # fmt: skip

    def _signature(self) -> Signature:
        return file_signature(self._path)
