"""The primary's ``challenger`` alias is shadowed while it is set: started when the alias
appears, swapped when it moves (a version that cannot serve is refused once and the current
one kept), stopped when it is removed; its records carry ``<model>@challenger`` and the
version; the label join asks the prediction store for its scores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from models.cli import models_app
from models.errors import RegistryError
from models.registry import CHALLENGER, CHAMPION, ModelRegistry
from streams.learning.join import LabelJoiner
from streams.metrics import Metrics
from streams.shadows.challenger import ChallengerModel, ChallengerShadow, challenger_watch
from streams.shadows.shadow import ShadowRunner
from streams.spec import LabelsSpec
from tests.unit.test_model_refusal import COLUMNS, fields, onnx_of_width
from tests.unit.test_pipeline import SPEC
from tests.unit.test_shadow_follow import Publisher, _batch

NAME = SPEC.model.name


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    good = onnx_of_width(len(COLUMNS), seed=1)
    registry.register(NAME, good, fields())  # v1, champion
    registry.register(NAME, onnx_of_width(len(COLUMNS), seed=2), fields())  # v2
    registry.register(NAME, onnx_of_width(len(COLUMNS), seed=3), fields())  # v3
    registry.register(NAME, good[: len(good) // 2], fields())  # v4: truncated
    return registry


async def test_the_challenger_is_shadowed_while_its_alias_is_set(registry: ModelRegistry) -> None:
    metrics = Metrics()
    publisher = Publisher()
    running: list[ShadowRunner] = []
    tasks: dict[ShadowRunner, asyncio.Task[None]] = {}

    def make_runner(model: ChallengerModel) -> ShadowRunner:
        return ShadowRunner(
            model, pipeline="unit", topic="shadows", threshold=0.5, queue_batches=4,
            publisher=publisher, store=None, metrics=metrics,
        )  # fmt: skip

    def start(runner: ShadowRunner) -> None:
        running.append(runner)
        tasks[runner] = asyncio.ensure_future(runner.run())

    def stop(runner: ShadowRunner) -> None:
        running.remove(runner)
        tasks.pop(runner).cancel()
        runner.close()

    watch = challenger_watch(registry, SPEC, metrics)
    challenger = ChallengerShadow(SPEC, metrics, make_runner, start, stop)
    batches = iter(range(100))

    async def published() -> set[tuple[str, int]]:
        """What the worker's timer does, then one batch offered to what runs."""
        change = watch.check()
        if change is not None:
            challenger.apply(change)
        publisher.records.clear()
        for runner in running:
            runner.offer(_batch(next(batches)))
            await asyncio.wait_for(runner.drain(), 10)
        return {
            (orjson.loads(r.value)["model"], orjson.loads(r.value)["model_version"])
            for r in publisher.records
        }

    sample = metrics.registry.get_sample_value
    info = {"pipeline": "unit", "role": "challenger", "model": f"{NAME}@challenger"}
    shadow = f"{NAME}@challenger"
    try:
        assert await published() == set()  # no challenger alias: nothing shadowed
        registry.set_alias(NAME, CHALLENGER, 2)
        assert await published() == {(shadow, 2)}
        assert sample("streamscore_model_info", {**info, "version": "2"}) == 1
        registry.set_alias(NAME, CHALLENGER, 4)  # cannot serve: refused once, v2 kept
        assert await published() == {(shadow, 2)}
        refused = {"pipeline": "unit", "model": NAME, "alias": CHALLENGER}
        assert sample("streamscore_model_refused_version", refused) == 4
        assert sample("streamscore_model_refusals_total", {**refused, "reason": "unloadable"}) == 1
        registry.set_alias(NAME, CHALLENGER, 3)
        assert await published() == {(shadow, 3)}
        assert len(running) == 1  # swapped, not a second runner
        assert sample("streamscore_model_info", {**info, "version": "2"}) is None
        assert registry.remove_alias(NAME, CHALLENGER) == 3
        assert await published() == set()
        assert not running and sample("streamscore_model_info", {**info, "version": "3"}) is None
        registry.set_alias(NAME, CHALLENGER, 2)  # set again: shadowed again
        assert await published() == {(shadow, 2)}
    finally:
        for runner in list(running):
            stop(runner)
    assert registry.aliases(NAME) == {CHAMPION: 1, CHALLENGER: 2}


def test_the_champion_cannot_be_removed_and_an_unset_alias_is_not_found(
    registry: ModelRegistry,
) -> None:
    with pytest.raises(RegistryError, match="cannot be removed"):
        registry.remove_alias(NAME, CHAMPION)
    with pytest.raises(RegistryError, match="no such alias"):
        registry.remove_alias(NAME, CHALLENGER)


def test_the_label_join_reads_the_challengers_scores_unless_the_spec_opts_out() -> None:
    labelled = SPEC.model_copy(update={"labels": LabelsSpec(topic="labels")})
    joiner = LabelJoiner(labelled, store=None, metrics=Metrics())  # type: ignore[arg-type]
    assert joiner.shadow_models == [f"{NAME}@challenger"]
    off = labelled.model_copy(
        update={"model": labelled.model.model_copy(update={"follow_challenger": False})}
    )
    assert LabelJoiner(off, store=None, metrics=Metrics()).shadow_models == []  # type: ignore[arg-type]
    assert off.challenger_shadow is None and labelled.labelled_topic == "unit-labelled"


def test_a_challenger_model_scores_as_its_version(registry: ModelRegistry) -> None:
    metrics = Metrics()
    watch = challenger_watch(registry, SPEC, metrics)
    registry.set_alias(NAME, CHALLENGER, 3)
    change = watch.check()
    assert change is not None and change.scorer is not None
    model = ChallengerModel(change.scorer, f"{NAME}@challenger")
    matrix = np.ones((2, len(COLUMNS)), dtype=np.float32)
    assert model.version == 3
    np.testing.assert_array_equal(model.score(matrix), change.scorer.score(matrix))
    assert watch.check() is None  # nothing moved since


def test_models_unalias_removes_the_challenger_and_never_the_champion(
    registry: ModelRegistry,
) -> None:
    env = {"STREAMSCORE_MODEL_DIR": str(registry.root), "COLUMNS": "200"}
    registry.set_alias(NAME, CHALLENGER, 2)
    done = CliRunner().invoke(models_app, ["unalias", NAME, "--alias", CHALLENGER], env=env)
    assert done.exit_code == 0 and "challenger removed (was version 2)" in done.output
    assert registry.aliases(NAME) == {CHAMPION: 1}
    refused = CliRunner().invoke(models_app, ["unalias", NAME, "--alias", CHAMPION], env=env)
    assert refused.exit_code == 2 and "cannot be removed" in refused.output
    assert registry.aliases(NAME) == {CHAMPION: 1}
