"""The primary's ``challenger``, shadowed while the alias is set.

``streamscore train --from-stream`` registers a version of the primary's model with the
alias ``challenger``. Every scoring worker notices (about once a second, one ``os.stat`` of
the model's ``aliases.json`` while nothing changes), loads the version if it loads and fits
the spec (``models.fitness``), and scores it in shadow under the name
``<model>@challenger`` (``PipelineSpec.challenger_shadow``): its records on the shadow topic
carry that name and the version, its scores go to the prediction store, and the label join
evaluates it like any shadow. When the alias moves the shadow swaps versions between
batches; when it is removed the shadow stops. No restart either way.

Only the spec's ``model.follow_challenger: false`` turns it off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.errors import ModelRefused, RegistryError
from models.fitness import Layout, load_checked
from models.inputs import Matrix
from models.registry import ALIASES_FILE, CHALLENGER, ModelRegistry
from models.scorer import OnnxScorer
from streams.metrics import Metrics
from streams.shadows.shadow import ShadowRunner
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)

ROLE = "challenger"  # the streamscore_model_info role


class ChallengerModel:
    """A version of the primary's model, scored in shadow under its own name."""

    def __init__(self, scorer: OnnxScorer, name: str) -> None:
        self.scorer = scorer
        self.name = name

    @property
    def version(self) -> int:
        return self.scorer.version

    def score(self, matrix: Matrix) -> npt.NDArray[np.float64]:
        return self.scorer.score(matrix)


@dataclass(frozen=True)
class ChallengerChange:
    """What the alias did: a version to shadow now, or ``None``: the alias was removed."""

    scorer: OnnxScorer | None


_Signature = tuple[int, int, int, int] | None


class ChallengerWatch:
    """Where the primary's ``challenger`` alias points. ``check`` is blocking (it may load a
    model): run it off the event loop."""

    def __init__(self, registry: ModelRegistry, spec: PipelineSpec, metrics: Metrics) -> None:
        self.registry = registry
        self.pipeline = spec.name
        self.name = spec.model.name
        self.version: int | None = None  # the version shadowed now
        self._path = registry.root / self.name / ALIASES_FILE
        self._seen: _Signature | str = "unread"
        self._layouts = [Layout.of(spec)]
        self._refused: set[int] = set()
        self._last_error = ""
        self._m_refusals = metrics.model_refusals
        self._m_refused_version = metrics.model_refused_version.labels(
            spec.name, self.name, CHALLENGER
        )

    def check(self) -> ChallengerChange | None:
        signature = self._signature()
        if signature == self._seen:
            return None
        self._seen = signature
        try:
            target = self.registry.aliases(self.name).get(CHALLENGER) if signature else None
        except RegistryError as exc:  # aliases.json unreadable: keep what is shadowed
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.warning("pipeline %s: cannot read the %s alias: %s", self.pipeline, ROLE, exc)
            return None
        self._last_error = ""
        if target == self.version:
            return None
        if target is None:
            log.info(
                "pipeline %s: %s alias of %s removed; no longer shadowing v%s",
                self.pipeline, ROLE, self.name, self.version,
            )  # fmt: skip
            self.version = None
            self._m_refused_version.set(0)
            return ChallengerChange(None)
        try:
            scorer = load_checked(self.registry, self.name, target, self._layouts)
        except ModelRefused as refused:
            self._refuse(refused)
            return None
        log.info(
            "pipeline %s: shadowing %s v%d (alias %r)", self.pipeline, self.name, target, CHALLENGER
        )
        self.version = target
        self._m_refused_version.set(0)
        return ChallengerChange(scorer)

    def _refuse(self, refused: ModelRefused) -> None:
        self._m_refused_version.set(refused.version)
        if refused.version in self._refused:
            return  # warned once already
        self._refused.add(refused.version)
        self._m_refusals.labels(self.pipeline, self.name, CHALLENGER, refused.reason).inc()
        log.warning(
            "pipeline %s: alias %r moved to a version it refuses: %s; %s",
            self.pipeline, CHALLENGER, refused,
            f"still shadowing v{self.version}" if self.version else "shadowing none",
        )  # fmt: skip

    def _signature(self) -> _Signature:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_dev, stat.st_mtime_ns, stat.st_size)


class ChallengerShadow:
    """Starts, swaps and stops the challenger's shadow runner as its alias changes.

    ``make_runner`` builds a runner for a model; ``start`` and ``stop`` add it to (remove it
    from) what the scoring service offers batches to and what runs shadow tasks."""

    def __init__(
        self,
        spec: PipelineSpec,
        metrics: Metrics,
        make_runner: Callable[[ChallengerModel], ShadowRunner],
        start: Callable[[ShadowRunner], None],
        stop: Callable[[ShadowRunner], None],
    ) -> None:
        assert spec.challenger_shadow is not None
        self.shadow_name = spec.challenger_shadow
        self.runner: ShadowRunner | None = None
        self._pipeline = spec.name
        self._make_runner = make_runner
        self._start = start
        self._stop = stop
        self._m_info = metrics.model_info

    def apply(self, change: ChallengerChange) -> None:
        """On the event loop, between batches."""
        runner = self.runner
        if runner is not None:
            self._m_info.remove(self._pipeline, ROLE, runner.model.name, str(runner.model.version))
        if change.scorer is None:
            if runner is not None:
                self._stop(runner)
                self.runner = None
            return
        model = ChallengerModel(change.scorer, self.shadow_name)
        if runner is None:
            self.runner = self._make_runner(model)
            self._start(self.runner)
        else:
            runner.swap_model(model)
        self._m_info.labels(self._pipeline, ROLE, model.name, str(model.version)).set(1)
