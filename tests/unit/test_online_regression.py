"""The online regressor (River's LinearRegression, optionally behind a StandardScaler): it is
exactly River's learn_one loop, scores row by row and as a frame alike, round-trips as data,
and learns only finite numbers. Data: scikit-learn's bundled diabetes set (442 rows, no
download), in its natural order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from river import linear_model, optim, preprocessing
from sklearn.datasets import load_diabetes

from models.online import MANY_FROM_ROWS, LabelError, OnlineLearner, OnlineModelSpec

FEATURES, TARGETS = load_diabetes(return_X_y=True)
COLUMNS = [f"x{i}" for i in range(FEATURES.shape[1])]
MATRIX = FEATURES.astype(np.float32)
LABELS = TARGETS.tolist()

SPECS = {
    "scaled": OnlineModelSpec(name="eta_river", model="linear_regression"),
    "raw_tuned": OnlineModelSpec(
        name="eta_river",
        model="linear_regression",
        params={"learning_rate": 0.05, "l2": 0.001, "intercept_lr": 0.1},
        scale=False,
    ),
}


def reference(key: str) -> Any:
    """The same River model, built by hand from River's own API."""
    if key == "scaled":
        return preprocessing.StandardScaler() | linear_model.LinearRegression()
    return linear_model.LinearRegression(optimizer=optim.SGD(0.05), l2=0.001, intercept_lr=0.1)


def as_dicts(matrix: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in matrix.astype(np.float64).tolist()]


@pytest.mark.parametrize("key", sorted(SPECS))
def test_learner_is_rivers_learn_one_loop(key: str) -> None:
    learner = OnlineLearner(SPECS[key], COLUMNS)
    assert learner.predict_many(MATRIX[:3]).tolist() == [0.0, 0.0, 0.0]  # the intercept
    start = 0
    for size in [1, 7, 64, 100, 3, 125]:  # 300 rows in uneven batches
        learner.learn(MATRIX[start : start + size], LABELS[start : start + size])
        start += size
    direct = reference(key)
    for x, y in zip(as_dicts(MATRIX[:300]), LABELS[:300], strict=True):
        direct.learn_one(x, y)
    expected = np.array([direct.predict_one(x) for x in as_dicts(MATRIX[300:])])
    assert learner.predict_many(MATRIX[300:]).tolist() == expected.tolist()
    assert (learner.version, learner.learned) == (6, 300)
    if key == "scaled":  # it learned something: better than the training mean
        mae = np.mean(np.abs(expected - TARGETS[300:]))
        assert mae < np.mean(np.abs(np.mean(TARGETS[:300]) - TARGETS[300:]))


def test_frame_path_agrees_with_rows() -> None:
    learner = OnlineLearner(SPECS["scaled"], COLUMNS)
    learner.learn(MATRIX[:200], LABELS[:200])
    rows = MATRIX[200 : 200 + MANY_FROM_ROWS + 40]
    as_frame = learner.predict_many(rows)
    one_by_one = np.concatenate([learner.predict_many(rows[i : i + 1]) for i in range(len(rows))])
    np.testing.assert_allclose(as_frame, one_by_one, rtol=1e-12)


@pytest.mark.parametrize("key", sorted(SPECS))
def test_snapshot_round_trip_predicts_and_learns_identically(key: str) -> None:
    learner = OnlineLearner(SPECS[key], COLUMNS)
    learner.learn(MATRIX[:150], LABELS[:150])
    restored = OnlineLearner.from_bytes(learner.to_bytes(), spec=SPECS[key], columns=COLUMNS)
    for model in (learner, restored):
        model.learn(MATRIX[150:300], LABELS[150:300])
    assert (
        restored.predict_many(MATRIX[300:]).tolist() == learner.predict_many(MATRIX[300:]).tolist()
    )
    assert restored.to_bytes() == learner.to_bytes()


@pytest.mark.parametrize("bad", [True, "3", None, math.nan, math.inf, -math.inf, 10**400])
def test_bad_targets_are_refused_and_teach_nothing(bad: object) -> None:
    learner = OnlineLearner(SPECS["scaled"], COLUMNS)
    learner.learn(MATRIX[:10], LABELS[:10])
    before = learner.to_bytes()
    with pytest.raises(LabelError, match=r"'eta_river': label #2 is .*finite numbers"):
        learner.learn(MATRIX[10:13], [1.0, 2.0, bad])
    assert learner.to_bytes() == before


def test_int_and_numpy_targets_are_numbers() -> None:
    learner = OnlineLearner(SPECS["raw_tuned"], COLUMNS)
    learner.learn(MATRIX[:3], [np.float32(151.0), np.int64(75), 141])
    direct = reference("raw_tuned")
    for x, y in zip(as_dicts(MATRIX[:3]), [151.0, 75.0, 141.0], strict=True):
        direct.learn_one(x, y)
    x = as_dicts(MATRIX[3:4])[0]
    assert learner.predict_many(MATRIX[3:4]).tolist() == [direct.predict_one(x)]


def test_a_classifier_still_refuses_numbers() -> None:
    classifier = OnlineLearner(OnlineModelSpec(name="c", model="logistic_regression"), COLUMNS)
    with pytest.raises(LabelError, match="0, 1 or a bool"):
        classifier.learn(MATRIX[:1], [151.0])


def test_task_of_each_kind() -> None:
    assert OnlineModelSpec(name="r", model="linear_regression").task == "regression"
    assert OnlineModelSpec(name="c", model="hoeffding_tree").task == "classification"
    assert OnlineModelSpec.kinds_for("regression") == ["linear_regression"]
