"""Canary routing (spec ``model.canary``): which keys the canary serves, what their records
and stored predictions say, and the alias it follows."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from models.errors import ScoringError
from models.registry import ModelRegistry
from streams.metrics import Metrics
from streams.scoring.canary import arm_model_name, canary_rows
from streams.scoring.pipeline import ScoringPipeline
from streams.scoring.prediction_store import PredictionStore, decode_record
from streams.shadows.model_follow import OptionalAliasWatch
from streams.spec import PipelineSpec
from tests.unit.test_model_refusal import COLUMNS, fields, onnx_of_width
from tests.unit.test_pipeline import SPEC, InMemoryFeatures, message, onnx_scorer  # noqa: F401

CANARY_SPEC = PipelineSpec.model_validate(
    {
        **SPEC.model_dump(exclude_none=True),
        "model": {"name": "unit_lr", "threshold": 0.5, "canary": {"share": 0.5}},
    }
)


class ConstantScorer:
    """A 'version' that answers one score: its rows are easy to tell apart."""

    def __init__(self, name: str, version: int, score: float) -> None:
        self.name, self.version, self.value, self.rows = name, version, score, 0

    def score(self, matrix):
        self.rows += len(matrix)
        return np.full(len(matrix), self.value)


def test_a_key_always_meets_the_same_arm_and_the_share_is_kept() -> None:
    keys = [f"card-{i}" for i in range(20_000)]
    first, again = canary_rows(keys, 0.05), canary_rows(list(reversed(keys)), 0.05)
    assert (first == again[::-1]).all()  # by the key alone, whatever the batch
    assert 0.04 < first.mean() < 0.06
    assert not canary_rows(keys, 0.0).any()
    assert canary_rows([7, "7"], 0.5)[0] == canary_rows([7, "7"], 0.5)[1]  # int or text key


def test_the_spec_takes_an_alias_and_a_share_of_at_most_half() -> None:
    assert CANARY_SPEC.model.canary is not None
    assert CANARY_SPEC.model.canary.version == "canary"
    base = {**SPEC.model_dump(exclude_none=True)}
    for canary, needle in (
        ({"share": 0.6}, "less than or equal to 0.5"),
        ({"share": 0.1, "version": "3"}, "pattern"),
        ({"share": 0.1, "version": "champion"}, "the primary's own version"),
    ):
        with pytest.raises(ValidationError, match=needle):
            PipelineSpec.model_validate({**base, "model": {"name": "unit_lr", "canary": canary}})


async def test_the_canary_serves_its_keys_and_says_so(onnx_scorer) -> None:  # noqa: F811
    metrics = Metrics()
    primary = ConstantScorer("unit_lr", 1, 0.25)
    canary = ConstantScorer("unit_lr", 2, 0.75)
    pipeline = ScoringPipeline(CANARY_SPEC, InMemoryFeatures(), primary, metrics)
    users = [f"u{i}" for i in range(40)]
    batch = [
        message(i, {"id": f"e{i}", "user": user, "amount": 5, "kind": "a"})
        for i, user in enumerate(users)
    ]

    without = [orjson.loads(r.value) for r in (await pipeline.score_batch(batch)).predictions]
    assert {(p["model_version"], p["served_by"]) for p in without} == {(1, "primary")}

    pipeline.swap_canary(canary)
    scored = await pipeline.score_batch(batch)
    records = [orjson.loads(r.value) for r in scored.predictions]
    on_canary = canary_rows(users, 0.5)
    assert 0 < on_canary.sum() < len(users)
    for record, routed in zip(records, on_canary.tolist(), strict=True):
        expected = (2, "canary", 0.75, True) if routed else (1, "primary", 0.25, False)
        assert (record["model_version"], record["served_by"], record["score"],
                record["decision"]) == expected  # fmt: skip
    # The primary still scored every row (shadows and drift compare with it); the canary
    # ran once, on its rows only.
    assert scored.scores is not None and (scored.scores == 0.25).all()
    assert canary.rows == on_canary.sum()
    served = metrics.registry.get_sample_value(
        "streamscore_canary_predictions_total", {"pipeline": "unit", "model": "unit_lr"}
    )
    assert served == on_canary.sum()

    pipeline.swap_canary(None)  # rolled back: the primary serves every key again
    again = [orjson.loads(r.value) for r in (await pipeline.score_batch(batch)).predictions]
    assert {p["served_by"] for p in again} == {"primary"}


class RecordingRedis:
    """What ``PredictionStore`` asks of Redis here: one script, whose arguments it keeps."""

    def __init__(self) -> None:
        self.args: list[object] = []

    def register_script(self, _source: str):
        async def run(keys=(), args=()):
            self.args.extend(args)

        return run


class FailingScorer(ConstantScorer):
    def score(self, matrix):
        raise ScoringError(self.name, self.version, "session.run failed on a batch: boom")


async def test_a_canary_that_fails_to_score_never_fails_the_batch() -> None:
    metrics = Metrics()
    pipeline = ScoringPipeline(
        CANARY_SPEC, InMemoryFeatures(), ConstantScorer("unit_lr", 1, 0.25), metrics
    )
    broken = FailingScorer("unit_lr", 2, 0.0)
    pipeline.swap_canary(broken)
    batch = [
        message(i, {"id": f"e{i}", "user": f"u{i}", "amount": 5, "kind": "a"}) for i in range(40)
    ]
    scored = await pipeline.score_batch(batch)

    records = [orjson.loads(r.value) for r in scored.predictions]
    assert len(records) == 40 and not scored.dead_letters  # every event served
    assert {(r["served_by"], r["model_version"], r["score"]) for r in records} == {
        ("primary", 1, 0.25)
    }
    assert scored.canary_rows is None and pipeline.canary is None  # dropped in this worker
    labels = {"pipeline": "unit", "model": "unit_lr"}
    sample = metrics.registry.get_sample_value
    assert sample("streamscore_canary_errors_total", labels) == 1
    assert sample("streamscore_canary_version", labels) == 0


async def test_stored_predictions_name_the_arm_that_served_them() -> None:
    redis = RecordingRedis()
    store = PredictionStore(redis, "unit", window_seconds=60)  # type: ignore[arg-type]
    matrix = np.zeros((3, 2), dtype=np.float32)
    await store.put_predictions(
        ["a", "b", "c"], 1.0, "unit_lr", 1, [0.1, 0.9, 0.2], matrix,
        canary=([False, True, False], 2),
    )  # fmt: skip
    values = [v for v in redis.args if isinstance(v, bytes)]
    decoded = [decode_record(e, v) for e, v in zip("abc", values, strict=True)]
    assert [(d.primary, d.primary_version) for d in decoded] == [
        ("unit_lr", 1), (arm_model_name("unit_lr"), 2), ("unit_lr", 1)
    ]  # fmt: skip
    assert decoded[1].scores == {"unit_lr@canary": 0.9}


def test_the_canary_alias_is_followed_as_it_appears_moves_and_is_removed(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    for seed in (1, 2, 3):
        registry.register("unit_lr", onnx_of_width(len(COLUMNS), seed=seed), fields())
    metrics = Metrics()
    watch = OptionalAliasWatch(registry, CANARY_SPEC, metrics, "canary", "canary")
    assert watch.check() is None  # no alias: nothing serves as canary
    registry.set_alias("unit_lr", "canary", 2)
    change = watch.check()
    assert change is not None and change.scorer is not None and change.scorer.version == 2
    assert watch.check() is None  # nothing moved
    registry.set_alias("unit_lr", "canary", 3)
    change = watch.check()
    assert change is not None and change.scorer is not None and change.scorer.version == 3
    assert registry.remove_alias("unit_lr", "canary", expected=3) == 3
    change = watch.check()
    assert change is not None and change.scorer is None
    removal = registry.alias_history("unit_lr")[-1]
    assert (removal.alias, removal.version, removal.previous) == ("canary", None, 3)
