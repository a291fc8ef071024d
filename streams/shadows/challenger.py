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
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from models.inputs import Matrix
from models.registry import CHALLENGER, ModelRegistry
from models.scorer import OnnxScorer
from streams.metrics import Metrics
from streams.shadows.model_follow import OptionalAliasWatch, WatchedChange
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


def challenger_watch(
    registry: ModelRegistry, spec: PipelineSpec, metrics: Metrics
) -> OptionalAliasWatch:
    """The watch on the primary's ``challenger`` alias."""
    return OptionalAliasWatch(registry, spec, metrics, CHALLENGER, ROLE)


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

    def apply(self, change: WatchedChange) -> None:
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
