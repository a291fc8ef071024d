"""The guard (``actions.guard``): a canary or a fresh promotion that serves worse than its
baseline by more than the margin is rolled back with compare-and-set, and recorded; one that
does not is left alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from models.registry import CHAMPION, ModelRegistry
from streams.actions.compare import served_figure
from streams.actions.guard import Guard, GuardStateError
from streams.actions.rollback import GuardRunner, guard_for
from streams.actions.spec import GuardSpec
from streams.learning.learner import LearnerService
from streams.metrics import Metrics
from streams.spec import PipelineSpec
from tests.unit.test_canary import CANARY_SPEC, RecordingRedis
from tests.unit.test_model_refusal import COLUMNS, fields, onnx_of_width
from tests.unit.test_pipeline import SPEC

MODEL = "unit_lr"
N = 50


def served(model: str, version: int, right: bool, n: int = N, seed: int = 0) -> list[dict]:
    """``n`` labelled events served by ``model`` (an arm's name) at ``version``: scored
    rightly (0.8 towards the label) or wrongly (0.8 away from it)."""
    rng = np.random.default_rng(seed)
    out = []
    for label in rng.integers(0, 2, n).tolist():
        towards = 0.8 if label else 0.2
        score = towards if right else 1 - towards
        out.append({"scores": {model: score}, "versions": {model: version}, "label": label})
    return out


def primary(version: int, right: bool = True, **kw: Any) -> list[dict]:
    return served(MODEL, version, right, **kw)


def canary(version: int, right: bool, **kw: Any) -> list[dict]:
    return served(f"{MODEL}@canary", version, right, **kw)


def new_guard(**policy: Any) -> Guard:
    spec = GuardSpec(min_labels=N, **policy)
    return Guard(MODEL, CHAMPION, "canary", spec, spec.metric or "log_loss", 0.5)


def test_a_canary_serving_worse_gets_a_rollback_verdict_only_once_its_window_is_full() -> None:
    guard = new_guard()
    guard.follow({CHAMPION: 1, "canary": 2})
    guard.observe(primary(1) + canary(2, right=False, n=N - 1))
    assert guard.verdicts() == []  # N - 1 canary labels: not judged yet
    guard.observe(canary(2, right=False, n=1) + canary(3, right=False))  # v3: not watched
    (verdict,) = guard.verdicts()
    assert verdict.rollback and verdict.watch.kind == "canary" and verdict.watch.version == 2
    assert verdict.candidate > verdict.baseline + 1  # log loss: higher is worse
    evidence = verdict.evidence(MODEL)
    assert evidence["labels"] == N and evidence["metric"] == "log_loss"
    assert set(evidence["arms"]) == {f"{MODEL}@2", f"{MODEL} (primary)"}
    assert evidence["gain"] < -1 and evidence["margin"] == 0.05


def test_a_canary_serving_as_well_is_judged_after_every_batch_and_kept() -> None:
    guard = new_guard()
    guard.follow({CHAMPION: 1, "canary": 2})
    guard.observe(primary(1, seed=1) + canary(2, right=True, seed=2))
    (verdict,) = guard.verdicts()
    assert not verdict.rollback and "within the margin" in verdict.reason
    guard.observe(canary(2, right=False))  # later it goes bad: the window slides to it
    (verdict,) = guard.verdicts()
    assert verdict.rollback


@pytest.mark.parametrize(
    ("metric", "better_is_higher"), [("accuracy", True), ("roc_auc", True), ("log_loss", False)]
)
def test_the_direction_follows_the_metric(metric: str, better_is_higher: bool) -> None:
    guard = new_guard(metric=metric)
    guard.follow({CHAMPION: 1, "canary": 2})
    guard.observe(primary(1, right=False) + canary(2, right=True))  # the canary is better
    (verdict,) = guard.verdicts()
    assert not verdict.rollback
    assert (verdict.candidate > verdict.baseline) == better_is_higher


def test_the_canary_watch_follows_the_alias() -> None:
    guard = new_guard()
    guard.follow({CHAMPION: 1, "canary": 2})
    guard.observe(canary(2, right=False))
    guard.follow({CHAMPION: 1, "canary": 3})  # a new canary: judged on its own labels
    guard.observe(primary(1) + canary(2, right=False))
    assert guard.canary is not None and len(guard.canary.candidate) == 0
    assert guard.verdicts() == []
    guard.follow({CHAMPION: 1})  # removed (by a person, say): nothing left to judge
    assert guard.canary is None and guard.verdicts() == []


def test_a_worse_promotion_is_judged_against_the_previous_versions_last_labels() -> None:
    guard = new_guard()
    guard.follow({CHAMPION: 1})  # first look: v1 was not seen moving in, not watched
    guard.observe(primary(1, seed=1))
    assert guard.promotion is None
    guard.follow({CHAMPION: 2})
    assert guard.promotion is not None and len(guard.promotion.baseline) == N
    guard.observe(primary(1, right=False))  # v1's late labels: not v2's
    guard.observe(primary(2, right=False, n=N - 1))
    assert guard.verdicts() == []
    guard.observe(primary(2, right=False, n=5))  # only its first N count
    (verdict,) = guard.verdicts()
    assert verdict.rollback and verdict.watch.previous == 1
    assert len(verdict.watch.candidate) == N
    guard.rolled_back(verdict)
    guard.follow({CHAMPION: 1})  # the guard's own move back: not a promotion to watch
    assert guard.promotion is None


def test_a_good_promotion_passes_and_its_watch_ends() -> None:
    guard = new_guard()
    guard.follow({CHAMPION: 1})
    guard.observe(primary(1, seed=1))
    guard.follow({CHAMPION: 2})
    guard.observe(primary(2, seed=2))
    (verdict,) = guard.verdicts()
    assert not verdict.rollback and guard.promotion is None
    assert any("passed" in note for note in guard.notes)


def test_a_promotion_without_a_full_baseline_is_not_judged() -> None:
    guard = new_guard()
    guard.follow({CHAMPION: 1})
    guard.observe(primary(1, n=10))
    guard.follow({CHAMPION: 2})
    guard.observe(primary(2, right=False))
    assert guard.verdicts() == [] and guard.promotion is None
    assert any("not judged" in note for note in guard.notes)


def test_promotions_can_be_left_unwatched() -> None:
    guard = new_guard(promotions=False)
    guard.follow({CHAMPION: 1})
    guard.observe(primary(1))
    guard.follow({CHAMPION: 2})
    assert guard.promotion is None


def test_the_state_round_trips_and_garbage_is_refused() -> None:
    guard = new_guard()
    guard.follow({CHAMPION: 1, "canary": 2})
    guard.observe(primary(1) + canary(2, right=False, n=N - 1))
    again = new_guard()
    again.restore(guard.to_data())
    assert again.to_data() == guard.to_data()
    again.observe(canary(2, right=False, n=1))
    (verdict,) = again.verdicts()
    assert verdict.rollback
    for bad in ([1, 2], {"primary": {"x": []}}, {**guard.to_data(), "seen": "1"}):
        with pytest.raises(GuardStateError):
            new_guard().restore(bad)


def test_served_figures() -> None:
    labels = np.array([1.0, 0.0, 1.0, 0.0])
    scores = np.array([0.9, 0.2, 0.4, 0.4])
    assert served_figure("accuracy", scores, labels, 0.5) == 0.75
    assert served_figure("roc_auc", scores, labels, 0.5) == pytest.approx(0.875)  # a tie: half
    assert served_figure("mae", scores, labels, 0.5) == pytest.approx(0.325)


def test_the_spec_section_is_validated_with_defaults_per_metric() -> None:
    assert GuardSpec().allowed("log_loss", 0.3) == 0.05
    assert GuardSpec(margin=0.2).allowed("mae", 100.0) == 0.2
    with pytest.raises(ValidationError, match="greater than or equal to 30"):
        GuardSpec(min_labels=5)
    base = SPEC.model_dump(exclude_none=True)
    with pytest.raises(ValidationError, match="actions.guard.metric: 'mae'"):
        PipelineSpec.model_validate({**base, "actions": {"guard": {"metric": "mae"}}})
    off = PipelineSpec.model_validate({**base, "actions": {"guard": {"enabled": False}}})
    assert guard_for(off) is None
    pinned = PipelineSpec.model_validate({**base, "model": {"name": MODEL, "version": "1"}})
    assert guard_for(pinned) is None  # no canary and no alias to watch
    watched = guard_for(CANARY_SPEC)
    assert watched is not None and (watched.alias, watched.canary_alias) == (CHAMPION, "canary")


# --- the runner: the registry moved with compare-and-set, the action recorded ------------


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path)
    for seed in (1, 2, 3):
        registry.register(MODEL, onnx_of_width(len(COLUMNS), seed=seed), fields())
    return registry


def runner_for(registry: ModelRegistry, metrics: Metrics) -> tuple[GuardRunner, list[dict]]:
    spec = PipelineSpec.model_validate(
        {
            **CANARY_SPEC.model_dump(exclude_none=True),
            "actions": {"guard": {"min_labels": N}},
            "labels": {"topic": "labels"},
        }
    )
    guard = guard_for(spec)
    assert guard is not None
    recorded: list[dict] = []

    async def record(records: list[dict]) -> None:
        recorded.extend(records)

    return GuardRunner(spec, guard, registry, record, metrics), recorded


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"pipeline": "unit", "model": MODEL, **labels})


async def batch(runner: GuardRunner, labels: list[dict]) -> None:
    """What the learner does with a batch: look at the aliases, observe, (checkpoint), judge."""
    await runner.look()
    runner.guard.observe(labels)
    await runner.judge()


async def test_a_bad_canary_loses_its_alias_and_the_rollback_is_recorded(registry) -> None:
    metrics = Metrics()
    runner, recorded = runner_for(registry, metrics)
    rollbacks = {"watch": "canary"}
    assert sample(metrics, "streamscore_guard_rollbacks_total", **rollbacks) == 0
    registry.set_alias(MODEL, "canary", 2)
    await batch(runner, primary(1) + canary(2, right=False, n=N - 1))
    assert sample(metrics, "streamscore_guard_watched_version", watch="canary") == 2
    assert sample(metrics, "streamscore_guard_labels", watch="canary", arm="candidate") == N - 1
    assert registry.aliases(MODEL)["canary"] == 2 and recorded == []
    await batch(runner, canary(2, right=False, n=1))
    assert "canary" not in registry.aliases(MODEL)
    (record,) = recorded
    assert (record["action"], record["decided_by"], record["alias"]) == (
        "rollback", "guard", "canary"
    )  # fmt: skip
    assert (record["from_version"], record["to_version"]) == (2, None)
    assert record["evidence"]["labels"] == N and record["reasons"]
    assert sample(metrics, "streamscore_guard_rollbacks_total", **rollbacks) == 1
    assert sample(metrics, "streamscore_guard_watched_version", watch="canary") == 0
    await batch(runner, canary(2, right=False))  # late labels of the removed canary
    assert len(recorded) == 1


async def test_a_canary_moved_meanwhile_is_not_rolled_back(registry) -> None:
    runner, recorded = runner_for(registry, Metrics())
    registry.set_alias(MODEL, "canary", 2)
    await runner.look()
    runner.guard.observe(primary(1) + canary(2, right=False))
    # A person moves the canary between the guard's look and its write: theirs wins.
    registry.set_alias(MODEL, "canary", 3)
    await runner.judge()
    assert registry.aliases(MODEL)["canary"] == 3 and recorded == []


async def test_a_bad_promotion_is_moved_back(registry) -> None:
    runner, recorded = runner_for(registry, Metrics())
    await batch(runner, primary(1))  # the first look: champion v1, unwatched
    registry.set_alias(MODEL, CHAMPION, 3)
    await batch(runner, primary(3, right=False))
    assert registry.aliases(MODEL)[CHAMPION] == 1
    (record,) = recorded
    assert (record["alias"], record["from_version"], record["to_version"]) == (CHAMPION, 3, 1)
    assert record["evidence"]["watch"] == "promotion"
    await batch(runner, primary(1))  # the move back is the guard's own: not watched
    assert runner.guard.promotion is None and registry.aliases(MODEL)[CHAMPION] == 1


async def test_between_promotions_the_baseline_a_move_would_meet_is_exported(registry) -> None:
    metrics = Metrics()
    runner, _ = runner_for(registry, metrics)
    await batch(runner, primary(1, n=20))
    baseline = {"watch": "promotion", "arm": "baseline"}
    assert sample(metrics, "streamscore_guard_labels", **baseline) == 20
    figure = sample(metrics, "streamscore_guard_metric", **baseline, metric="log_loss")
    assert figure == pytest.approx(-np.log(0.8))
    assert sample(metrics, "streamscore_guard_watched_version", watch="promotion") == 0


def test_the_learner_checkpoints_the_guard_and_a_new_owner_resumes_it(registry) -> None:
    def learner() -> LearnerService:
        runner, _ = runner_for(registry, Metrics())
        client = RecordingRedis()
        return LearnerService(runner.spec, client, Metrics(), guard=runner)  # type: ignore[arg-type]

    owner = learner()
    assert owner.guard is not None
    owner.guard.guard.follow({CHAMPION: 1, "canary": 2})
    owner.guard.guard.observe(primary(1) + canary(2, right=False, n=N - 1))
    checkpoint = owner._performance_state()
    successor = learner()
    assert successor.guard is not None
    successor._restore_performance(checkpoint)
    assert successor.guard.guard.to_data() == owner.guard.guard.to_data()
    successor._restore_performance(b'{"concept_drift": {}, "guard": [1]}')  # not a guard's
    assert successor.guard.guard.canary is None  # a new guard, not half of one
