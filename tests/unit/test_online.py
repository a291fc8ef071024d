"""The online River learner: it is exactly River's learn_one loop, snapshots round-trip,
bad labels teach nothing.

Data: River's bundled Phishing stream (1,250 real labelled rows, no download).
"""

from __future__ import annotations

import doctest
import inspect
import pickle
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from river import compose, datasets, linear_model, optim, preprocessing, tree

import models.online
from models.errors import ModelInputError
from models.online import (
    MANY_FROM_ROWS,
    LabelError,
    OnlineLearner,
    OnlineModelSpec,
    SnapshotError,
)

ROWS = list(datasets.Phishing())
COLUMNS = sorted(ROWS[0][0])
MATRIX = np.array([[x[c] for c in COLUMNS] for x, _ in ROWS], dtype=np.float32)
LABELS = [bool(y) for _, y in ROWS]
TRAIN, HELD_OUT = slice(0, 1000), slice(1000, None)

SPECS = {
    "lr_scaled": OnlineModelSpec(name="fraud_river", model="logistic_regression"),
    "lr_raw_tuned": OnlineModelSpec(
        name="fraud_river",
        model="logistic_regression",
        params={"learning_rate": 0.05, "l2": 0.001},
        scale=False,
    ),
    "tree_scaled": OnlineModelSpec(
        name="fraud_tree", model="hoeffding_tree", params={"grace_period": 50}
    ),
    "tree_raw": OnlineModelSpec(
        name="fraud_tree",
        model="hoeffding_tree",
        params={"grace_period": 30, "leaf_prediction": "mc", "max_depth": 4},
        scale=False,
    ),
}


def reference(key: str) -> Any:
    """The same River model, built by hand from River's own API."""
    if key == "lr_scaled":
        return preprocessing.StandardScaler() | linear_model.LogisticRegression()
    if key == "lr_raw_tuned":
        return linear_model.LogisticRegression(optimizer=optim.SGD(0.05), l2=0.001)
    if key == "tree_scaled":
        return preprocessing.StandardScaler() | tree.HoeffdingTreeClassifier(grace_period=50)
    return tree.HoeffdingTreeClassifier(grace_period=30, leaf_prediction="mc", max_depth=4)


def as_dicts(matrix: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in matrix.astype(np.float64).tolist()]


def reference_scores(model: Any, matrix: np.ndarray) -> np.ndarray:
    probas = [model.predict_proba_one(x) for x in as_dicts(matrix)]
    return np.array([p.get(True, 0.0) if p else 0.5 for p in probas])


def learn_in_batches(learner: OnlineLearner, sizes: list[int], stop: int) -> None:
    start, i = 0, 0
    while start < stop:
        end = min(stop, start + sizes[i % len(sizes)])
        learner.learn(MATRIX[start:end], LABELS[start:end])
        start, i = end, i + 1


@pytest.mark.parametrize("key", sorted(SPECS))
def test_learner_is_rivers_learn_one_loop(key: str) -> None:
    learner = OnlineLearner(SPECS[key], COLUMNS)
    learn_in_batches(learner, [1, 7, 64, 300, 3], stop=1000)
    direct = reference(key)
    for x, y in zip(as_dicts(MATRIX[TRAIN]), LABELS[TRAIN], strict=True):
        direct.learn_one(x, y)
    held_out = MATRIX[HELD_OUT]
    expected = reference_scores(direct, held_out)
    got = learner.predict_many(held_out)  # 250 rows: the frame path for LR
    assert got.dtype == np.float64 and got.shape == (250,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    small = np.concatenate([learner.predict_many(held_out[i : i + 10]) for i in range(0, 250, 10)])
    np.testing.assert_array_equal(small, expected)  # the per-row path is River's, exactly
    assert np.mean((got >= 0.5) == np.array(LABELS[HELD_OUT])) > 0.8  # it did learn


def test_order_matters_and_is_kept() -> None:
    forward = OnlineLearner(SPECS["lr_scaled"], COLUMNS)
    forward.learn(MATRIX[:300], LABELS[:300])
    backward = OnlineLearner(SPECS["lr_scaled"], COLUMNS)
    backward.learn(MATRIX[:300][::-1], LABELS[:300][::-1])
    held_out = MATRIX[HELD_OUT][:20]
    assert not np.array_equal(forward.predict_many(held_out), backward.predict_many(held_out))


@pytest.mark.parametrize("key", sorted(SPECS))
def test_untrained_predicts_one_half(key: str) -> None:
    learner = OnlineLearner(SPECS[key], COLUMNS)
    for n in (0, 1, MANY_FROM_ROWS + 5):
        scores = learner.predict_many(MATRIX[:n])
        assert scores.shape == (n,)
        assert (scores == 0.5).all()


def test_tree_that_saw_one_class_gives_the_other_zero() -> None:
    learner = OnlineLearner(SPECS["tree_raw"], COLUMNS)
    negatives = MATRIX[np.array(LABELS) == 0][:20]
    learner.learn(negatives, [0] * 20)
    assert (learner.predict_many(MATRIX[:5]) == 0.0).all()


@pytest.mark.parametrize("key", sorted(SPECS))
def test_predict_has_no_side_effects_and_keeps_input(key: str) -> None:
    learner = OnlineLearner(SPECS[key], COLUMNS)
    learner.learn(MATRIX[:400], LABELS[:400])
    probe = MATRIX[HELD_OUT].copy()
    before = learner.to_bytes()
    first = learner.predict_many(probe)
    learner.predict_many(MATRIX[400:600])
    np.testing.assert_array_equal(learner.predict_many(probe), first)
    np.testing.assert_array_equal(probe, MATRIX[HELD_OUT])
    assert learner.to_bytes() == before


def test_version_counts_learn_calls_and_learned_counts_rows() -> None:
    learner = OnlineLearner(SPECS["lr_scaled"], COLUMNS)
    assert (learner.version, learner.learned) == (0, 0)
    learner.learn(MATRIX[:3], LABELS[:3])
    learner.learn(MATRIX[3:3], [])  # nothing learned: no new version
    learner.learn(MATRIX[3:10], np.array(LABELS[3:10]))
    assert (learner.version, learner.learned) == (2, 10)


@pytest.mark.parametrize("key", sorted(SPECS))
def test_snapshot_round_trip_predicts_and_learns_identically(key: str) -> None:
    learner = OnlineLearner(SPECS[key], COLUMNS)
    learner.learn(MATRIX[:500], LABELS[:500])
    learner.learn(MATRIX[500:600], LABELS[500:600])
    restored = OnlineLearner.from_bytes(learner.to_bytes())
    assert (restored.version, restored.learned) == (2, 600)
    assert restored.columns == learner.columns and restored.spec == learner.spec
    held_out = MATRIX[HELD_OUT]
    np.testing.assert_array_equal(restored.predict_many(held_out), learner.predict_many(held_out))
    for model in (learner, restored):
        model.learn(MATRIX[600:1000], LABELS[600:1000])
    np.testing.assert_array_equal(restored.predict_many(held_out), learner.predict_many(held_out))
    assert (restored.version, restored.learned) == (learner.version, learner.learned) == (3, 1000)


def test_untrained_snapshot_round_trips() -> None:
    restored = OnlineLearner.from_bytes(OnlineLearner(SPECS["tree_raw"], COLUMNS).to_bytes())
    assert (restored.version, restored.learned) == (0, 0)
    assert (restored.predict_many(MATRIX[:3]) == 0.5).all()


def test_snapshot_of_another_spec_or_layout_is_refused_when_asked() -> None:
    data = OnlineLearner(SPECS["lr_scaled"], COLUMNS).to_bytes()
    same = OnlineLearner.from_bytes(data, spec=SPECS["lr_scaled"], columns=list(COLUMNS))
    assert same.spec == SPECS["lr_scaled"]
    with pytest.raises(SnapshotError, match="'fraud_river'.*the spec now asks for"):
        OnlineLearner.from_bytes(data, spec=SPECS["lr_raw_tuned"])
    with pytest.raises(SnapshotError, match="the input is now"):
        OnlineLearner.from_bytes(data, columns=[*COLUMNS, "new_feature"])


def test_foreign_or_damaged_snapshots_are_refused() -> None:
    good = OnlineLearner(SPECS["lr_scaled"], COLUMNS).to_bytes()
    with pytest.raises(SnapshotError, match="not a snapshot"):
        OnlineLearner.from_bytes(good[: len(good) // 2])
    with pytest.raises(SnapshotError, match="format 1"):
        OnlineLearner.from_bytes(pickle.dumps({"format": 99}))
    state = pickle.loads(good)  # noqa: S301
    with pytest.raises(SnapshotError, match="incomplete"):
        OnlineLearner.from_bytes(pickle.dumps({k: v for k, v in state.items() if k != "model"}))
    state["river"] = "0.0.1"
    with pytest.raises(SnapshotError, match=r"'fraud_river'.*river 0\.0\.1"):
        OnlineLearner.from_bytes(pickle.dumps(state))


@pytest.mark.parametrize(
    "bad", [2, -1, 0.0, 1.0, 0.5, "1", None, np.float32(1.0), np.int64(3)], ids=repr
)
def test_bad_labels_are_refused_and_teach_nothing(bad: object) -> None:
    learner = OnlineLearner(SPECS["lr_scaled"], COLUMNS)
    learner.learn(MATRIX[:50], LABELS[:50])
    before = learner.to_bytes()
    labels: list[object] = [1, 0, bad, 1]
    with pytest.raises(LabelError, match=r"'fraud_river': label #2 is .*0, 1 or a bool") as caught:
        learner.learn(MATRIX[50:54], labels)
    assert caught.value.index == 2 and caught.value.value is bad
    assert learner.to_bytes() == before and (learner.version, learner.learned) == (1, 50)


def test_good_label_kinds() -> None:
    learner = OnlineLearner(SPECS["lr_scaled"], COLUMNS)
    labels: list[Any] = [True, False, 1, 0, np.int64(1), np.bool_(False), np.uint8(0)]
    learner.learn(MATRIX[:7], labels)
    direct = reference("lr_scaled")
    for x, y in zip(as_dicts(MATRIX[:7]), [bool(v) for v in labels], strict=True):
        direct.learn_one(x, y)
    np.testing.assert_array_equal(
        learner.predict_many(MATRIX[:9]), reference_scores(direct, MATRIX[:9])
    )
    learner.learn(MATRIX[:4], np.array([0, 1, 1, 0], dtype=np.int64))
    learner.learn(MATRIX[:2], np.array([True, False]))


def test_shape_and_value_errors_name_the_model() -> None:
    learner = OnlineLearner(SPECS["lr_scaled"], COLUMNS)
    with pytest.raises(ModelInputError, match=r"'fraud_river' version 0: input has shape \(3, 2\)"):
        learner.predict_many(np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(ModelInputError, match="expected"):
        learner.predict_many(np.zeros(len(COLUMNS), dtype=np.float32))
    with pytest.raises(ModelInputError, match="3 labels for 4 rows"):
        learner.learn(MATRIX[:4], [0, 1, 0])
    poisoned = MATRIX[:4].copy()
    poisoned[2, 1] = np.nan
    with pytest.raises(ModelInputError, match=f"row 2 column '{COLUMNS[1]}' is nan"):
        learner.learn(poisoned, [0, 1, 0, 1])
    assert learner.learned == 0


def test_bad_columns_are_refused() -> None:
    with pytest.raises(models.online.OnlineModelError, match="distinct"):
        OnlineLearner(SPECS["lr_scaled"], ["a", "a"])
    spec = OnlineModelSpec(
        name="t", model="hoeffding_tree", params={"nominal_attributes": ["https", "nope"]}
    )
    with pytest.raises(models.online.OnlineModelError, match=r"\['nope'\] are not input columns"):
        OnlineLearner(spec, COLUMNS)


def test_spec_refuses_unknown_and_mistyped_params_without_river() -> None:
    with pytest.raises(ValidationError, match="params.grace_priod: Extra inputs"):
        OnlineModelSpec(name="t", model="hoeffding_tree", params={"grace_priod": 10})
    with pytest.raises(ValidationError, match="params.leaf_prediction"):
        OnlineModelSpec(name="t", model="hoeffding_tree", params={"leaf_prediction": "magic"})
    with pytest.raises(ValidationError, match="params.learning_rate"):
        OnlineModelSpec(name="t", params={"learning_rate": -1})
    with pytest.raises(ValidationError, match="extra"):
        OnlineModelSpec.model_validate({"name": "t", "model": "hoeffding_tree", "scaler": True})
    with pytest.raises(ValidationError):
        OnlineModelSpec(name="t", model="svm")  # type: ignore[arg-type]
    spec = OnlineModelSpec(name="t")
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "u"


def test_spec_params_are_rivers_constructor_arguments() -> None:
    """The params the spec accepts exist in River's signatures (learning_rate is ours)."""
    river_args = {
        "logistic_regression": set(inspect.signature(linear_model.LogisticRegression).parameters),
        "hoeffding_tree": set(inspect.signature(tree.HoeffdingTreeClassifier).parameters),
    }
    for kind, params in models.online._PARAMS.items():
        ours = set(params.model_fields) - {"learning_rate"}
        assert ours <= river_args[kind], ours - river_args[kind]
        defaults = {
            k: v.default
            for k, v in inspect.signature(
                linear_model.LogisticRegression
                if kind == "logistic_regression"
                else tree.HoeffdingTreeClassifier
            ).parameters.items()
        }
        for name, field in params.model_fields.items():
            if name in defaults:
                assert field.default == defaults[name], (kind, name)


def test_pipeline_shape_matches_spec() -> None:
    built = models.online.build_river_model(SPECS["tree_scaled"])
    assert isinstance(built, compose.Pipeline)
    assert [type(step).__name__ for step in built.steps.values()] == [
        "StandardScaler",
        "HoeffdingTreeClassifier",
    ]
    assert isinstance(
        models.online.build_river_model(SPECS["lr_raw_tuned"]), linear_model.LogisticRegression
    )


def test_docstring_examples_run() -> None:
    assert doctest.testmod(models.online).failed == 0
