"""Rolling evaluation of a regression pipeline: MAE and RMSE over the last window of
(label, served score) pairs, equal to scikit-learn on that window at every step; nothing
classification-specific; stored as data and continued exactly; bad updates teach nothing."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import mean_absolute_error, mean_squared_error

from models.evaluation import EvaluationError, EvaluationStateError, RollingEvaluation
from models.online import LabelError

FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(min_value=1, max_value=40),
    pairs=st.lists(st.tuples(FINITE, FINITE), min_size=1, max_size=120),
    batch=st.integers(min_value=1, max_value=17),
)
def test_mae_and_rmse_equal_sklearn_on_the_window_at_every_step(
    window: int, pairs: list[tuple[float, float]], batch: int
) -> None:
    evaluation = RollingEvaluation(window=window, task="regression")
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        evaluation.update_many("eta_gbr", [s for s, _ in chunk], [y for _, y in chunk])
        seen = pairs[: start + len(chunk)]
        last = seen[-window:]
        scores, labels = np.array([s for s, _ in last]), np.array([y for _, y in last])
        got = evaluation.snapshot()["eta_gbr"]
        assert set(got) == {"count", "window_count", "mae", "rmse"}
        assert got["count"] == len(seen)
        assert got["window_count"] == len(last)
        assert got["mae"] == pytest.approx(mean_absolute_error(labels, scores), rel=1e-9, abs=1e-9)
        rmse = math.sqrt(mean_squared_error(labels, scores))
        assert got["rmse"] == pytest.approx(rmse, rel=1e-9, abs=1e-9)


def test_random_stream_in_label_order_and_per_model() -> None:
    rng = np.random.default_rng(3)
    labels = rng.normal(30, 8, 500)
    good, bad = labels + rng.normal(0, 2, 500), labels + rng.normal(5, 6, 500)
    evaluation = RollingEvaluation(window=100, task="regression")
    for y, g, b in zip(labels.tolist(), good.tolist(), bad.tolist(), strict=True):
        evaluation.update("good", g, y)
        evaluation.update("bad", b, y, threshold=0.9)  # ignored: a regressor decides nothing
    snapshot = evaluation.snapshot()
    for model, scores in (("good", good), ("bad", bad)):
        assert snapshot[model]["mae"] == pytest.approx(
            mean_absolute_error(labels[-100:], scores[-100:]), rel=1e-12
        )
    assert snapshot["good"]["rmse"] < snapshot["bad"]["rmse"]
    assert evaluation.models == ["bad", "good"]


@pytest.mark.parametrize("first", [0, 7, 100, 333])
def test_round_trips_as_data_and_continues_identically(first: int) -> None:
    rng = np.random.default_rng(11)
    labels, scores = rng.normal(0, 50, 400).tolist(), rng.normal(0, 50, 400).tolist()
    original = RollingEvaluation(window=64, task="regression")
    original.update_many("m", scores[:first], labels[:first])
    data = original.to_bytes()
    assert orjson.loads(data)["task"] == "regression"
    restored = RollingEvaluation.from_bytes(data, task="regression")
    assert restored.snapshot() == original.snapshot()
    for evaluation in (original, restored):
        evaluation.update_many("m", scores[first:], labels[first:])
    assert restored.snapshot() == original.snapshot()


def test_a_stored_evaluation_of_another_task_is_refused() -> None:
    regression = RollingEvaluation(task="regression")
    regression.update("m", 3.0, 2.5)
    classification = RollingEvaluation()
    classification.update("m", 0.3, 1)
    with pytest.raises(EvaluationStateError, match="regression task, the pipeline's is class"):
        RollingEvaluation.from_bytes(regression.to_bytes(), task="classification")
    with pytest.raises(EvaluationStateError, match="classification task, the pipeline's is reg"):
        RollingEvaluation.from_bytes(classification.to_bytes(), task="regression")
    # Written before the task was stored: a classification evaluation.
    old = orjson.loads(classification.to_bytes())
    del old["task"]
    assert RollingEvaluation.from_bytes(orjson.dumps(old)).task == "classification"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["models"]["m"].update(scores=[1.0, "2"]),
        lambda d: d["models"]["m"].update(labels=[1.0]),
        lambda d: d["models"]["m"].update(count=-1),
        lambda d: d["models"]["m"].update(decisions=[True, True]),
        lambda d: d.update(task="ranking"),
    ],
)
def test_damaged_regression_evaluations_are_refused(change: object) -> None:
    evaluation = RollingEvaluation(window=5, task="regression")
    evaluation.update_many("m", [1.0, 2.0], [1.5, 2.5])
    data = orjson.loads(evaluation.to_bytes())
    change(data)  # type: ignore[operator]
    with pytest.raises(EvaluationStateError):
        RollingEvaluation.from_bytes(orjson.dumps(data))


def test_bad_updates_are_refused_and_change_nothing() -> None:
    evaluation = RollingEvaluation(window=5, task="regression")
    evaluation.update("m", 4.0, 3.0)
    before = evaluation.snapshot()
    for bad_label in (True, "3", None, math.nan, math.inf):
        with pytest.raises(LabelError, match="finite numbers"):
            evaluation.update("m", 4.0, bad_label)
    for bad_score in (math.nan, -math.inf):
        with pytest.raises(EvaluationError, match="not a finite number"):
            evaluation.update("m", bad_score, 3.0)
    with pytest.raises(LabelError, match="label #2"):
        evaluation.update_many("m", [1.0, 2.0, 3.0], [1.0, 2.0, False])
    assert evaluation.snapshot() == before


def test_the_task_is_checked() -> None:
    with pytest.raises(ValueError, match="task must be"):
        RollingEvaluation(task="ranking")  # type: ignore[arg-type]
