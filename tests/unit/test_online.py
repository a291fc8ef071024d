"""The online River learner: it is exactly River's learn_one loop, snapshots round-trip
exactly as data (never a pickle), bad labels teach nothing.

Data: River's bundled Phishing stream (1,250 real labelled rows, no download).
"""

from __future__ import annotations

import collections
import doctest
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import orjson
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
from tests.planted import planted_pickle

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


# Every kind of River object an online spec can grow, for the snapshot round trips, with
# the tree nodes each one must have grown on the first 600 rows (checked, so the round trip
# really covers them).
SNAPSHOT_SPECS: dict[str, tuple[OnlineModelSpec, set[str]]] = {
    **{key: (spec, set()) for key, spec in SPECS.items() if key.startswith("lr")},
    "lr_l1": (OnlineModelSpec(name="fraud_river", params={"l1": 0.001}), set()),
    "tree_scaled": (SPECS["tree_scaled"], {"NumericBinaryBranch", "LeafNaiveBayesAdaptive"}),
    "tree_raw": (SPECS["tree_raw"], {"LeafMajorityClass"}),
    "tree_nb_gini": (  # one leaf at 600 rows, splits later: see test_restored_tree_splits...
        OnlineModelSpec(
            name="fraud_tree",
            model="hoeffding_tree",
            params={"grace_period": 20, "leaf_prediction": "nb", "split_criterion": "gini"},
        ),
        {"LeafNaiveBayes"},
    ),
    "tree_nominal_multiway": (
        OnlineModelSpec(
            name="fraud_tree",
            model="hoeffding_tree",
            params={
                "grace_period": 20,
                "delta": 0.3,
                "max_depth": 3,
                "nominal_attributes": COLUMNS[:4],
                "remove_poor_attrs": True,
            },
            scale=False,
        ),
        {"NominalMultiwayBranch", "NumericBinaryBranch", "inactive leaf", "nominal splitter"},
    ),
    "tree_nominal_binary": (
        OnlineModelSpec(
            name="fraud_tree",
            model="hoeffding_tree",
            params={
                "grace_period": 20,
                "nominal_attributes": COLUMNS,
                "binary_split": True,
                "split_criterion": "hellinger",
            },
            scale=False,
        ),
        {"NominalBinaryBranch", "nominal splitter"},
    ),
}


def tree_parts(learner: OnlineLearner) -> collections.Counter[str]:
    """What a learner's Hoeffding tree is made of: node classes, inactive leaves and
    leaves' nominal splitters."""
    model = learner._model
    tree_model = model["HoeffdingTreeClassifier"] if isinstance(model, compose.Pipeline) else model
    parts: collections.Counter[str] = collections.Counter()
    nodes = [tree_model._root] if tree_model._root is not None else []
    while nodes:
        node = nodes.pop()
        parts[type(node).__name__] += 1
        if hasattr(node, "children"):
            nodes.extend(node.children)
        elif node.splitters is None:
            parts["inactive leaf"] += 1
        else:
            parts["nominal splitter"] += sum(
                type(s).__name__ == "NominalSplitterClassif" for s in node.splitters.values()
            )
    return +parts


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


@pytest.mark.parametrize("key", sorted(SNAPSHOT_SPECS))
def test_snapshot_round_trip_predicts_and_learns_identically(key: str) -> None:
    spec, parts = SNAPSHOT_SPECS[key]
    learner = OnlineLearner(spec, COLUMNS)
    learner.learn(MATRIX[:500], LABELS[:500])
    learner.learn(MATRIX[500:600], LABELS[500:600])
    if parts:
        assert parts <= set(tree_parts(learner)), tree_parts(learner)
    data = learner.to_bytes()
    assert data.startswith(b"{") and orjson.loads(data)["format"] == 2  # JSON, not a pickle
    restored = OnlineLearner.from_bytes(data)
    assert restored._model is not learner._model
    assert (restored.version, restored.learned) == (2, 600)
    assert restored.columns == learner.columns and restored.spec == learner.spec
    assert restored.to_bytes() == data
    held_out = MATRIX[HELD_OUT]
    np.testing.assert_array_equal(restored.predict_many(held_out), learner.predict_many(held_out))
    rows = as_dicts(held_out)  # River's own calls, per row: equal to the last bit
    for method in ("predict_proba_one", "predict_one"):
        assert [getattr(restored._model, method)(x) for x in rows] == [
            getattr(learner._model, method)(x) for x in rows
        ]
    for model in (learner, restored):
        model.learn(MATRIX[600:1000], LABELS[600:1000])
    np.testing.assert_array_equal(restored.predict_many(held_out), learner.predict_many(held_out))
    assert restored.to_bytes() == learner.to_bytes()  # the same state, to the last bit
    assert (restored.version, restored.learned) == (learner.version, learner.learned) == (3, 1000)


def test_restored_tree_splits_as_the_original_does() -> None:
    spec, _ = SNAPSHOT_SPECS["tree_nb_gini"]
    learner = OnlineLearner(spec, COLUMNS)
    learner.learn(MATRIX[:600], LABELS[:600])
    assert tree_parts(learner) == {"LeafNaiveBayes": 1}
    restored = OnlineLearner.from_bytes(learner.to_bytes())
    for model in (learner, restored):
        model.learn(MATRIX[600:1000], LABELS[600:1000])
    assert (
        tree_parts(restored)
        == tree_parts(learner)
        == {
            "NumericBinaryBranch": 1,
            "LeafNaiveBayes": 2,
        }
    )
    held_out = MATRIX[HELD_OUT]
    np.testing.assert_array_equal(restored.predict_many(held_out), learner.predict_many(held_out))


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


def trained(key: str = "lr_scaled") -> dict[str, Any]:
    learner = OnlineLearner(SPECS[key], COLUMNS)
    learner.learn(MATRIX[:100], LABELS[:100])
    state: dict[str, Any] = orjson.loads(learner.to_bytes())
    return state


def test_foreign_or_damaged_snapshots_are_refused() -> None:
    good = OnlineLearner(SPECS["lr_scaled"], COLUMNS).to_bytes()
    with pytest.raises(SnapshotError, match="not a snapshot .not JSON"):
        OnlineLearner.from_bytes(good[: len(good) // 2])
    with pytest.raises(SnapshotError, match="format 2"):
        OnlineLearner.from_bytes(orjson.dumps({"format": 1}))
    with pytest.raises(SnapshotError, match="format 2"):
        OnlineLearner.from_bytes(b"[1, 2]")
    state = trained()
    with pytest.raises(SnapshotError, match="incomplete"):
        OnlineLearner.from_bytes(orjson.dumps({k: v for k, v in state.items() if k != "model"}))
    for field, value in (("version", -1), ("learned", 1.5), ("columns", "amount")):
        with pytest.raises(SnapshotError, match="incomplete or invalid"):
            OnlineLearner.from_bytes(orjson.dumps({**state, field: value}))
    with pytest.raises(SnapshotError, match=r"'fraud_river'.*river 0\.0\.1"):
        OnlineLearner.from_bytes(orjson.dumps({**state, "river": "0.0.1"}))


def test_model_state_that_does_not_fit_the_spec_is_refused() -> None:
    """The data fills the model the spec builds; it cannot swap in another one."""
    tree_state = trained("tree_raw")
    with pytest.raises(
        SnapshotError,
        match=r"'fraud_river'.*model: holds an object river.tree.*HoeffdingTreeClassifier where"
        r" the model built from the spec has a river.compose.pipeline.Pipeline",
    ):
        OnlineLearner.from_bytes(orjson.dumps({**trained(), "model": tree_state["model"]}))
    state = trained()
    objects = state["model"]["objects"]
    scaler = next(attrs for name, attrs in objects if name.endswith("StandardScaler"))
    scaler["means"] = ["list", [1.0]]
    with pytest.raises(
        SnapshotError, match=r"model\.steps\['StandardScaler'\]\.means: holds a list"
    ):
        OnlineLearner.from_bytes(orjson.dumps(state))
    state = trained()
    regression = next(attrs for name, attrs in state["model"]["objects"] if "LogisticReg" in name)
    regression["__class__"] = "os.system"
    with pytest.raises(SnapshotError, match=r"unexpected \['__class__'\]"):
        OnlineLearner.from_bytes(orjson.dumps(state))


def test_a_planted_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = planted_pickle(marker)
    with pytest.raises(SnapshotError, match="a pickle .* never loaded"):
        OnlineLearner.from_bytes(payload)
    with pytest.raises(SnapshotError, match="a pickle .* never loaded"):
        OnlineLearner.from_bytes(payload, spec=SPECS["lr_scaled"], columns=COLUMNS)
    assert not marker.exists()


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
    river_classes = {
        "logistic_regression": linear_model.LogisticRegression,
        "hoeffding_tree": tree.HoeffdingTreeClassifier,
        "linear_regression": linear_model.LinearRegression,
    }
    assert set(river_classes) == set(models.online._PARAMS)
    for kind, params in models.online._PARAMS.items():
        signature = inspect.signature(river_classes[kind]).parameters
        ours = set(params.model_fields) - {"learning_rate"}
        assert ours <= set(signature), ours - set(signature)
        defaults = {k: v.default for k, v in signature.items()}
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


def test_checkpoint_announcements_are_parsed_as_numbers_only(caplog) -> None:
    """What the online shadow hears on the checkpoints channel: a version with its label
    count and time, or the label join's forwarded total; anything else is ignored."""
    from streams.learning.learner import CheckpointAnnouncements

    heard = CheckpointAnnouncements.__new__(CheckpointAnnouncements)  # no listener thread
    heard.latest, heard.forwarded, heard._channel = 0, 0, "c"
    heard._checkpoints = __import__("collections").OrderedDict()
    heard.heard(b"checkpoint 7 120 1700000000.5")
    heard.heard(b"forwarded 130")
    heard.heard(b"forwarded 125")  # an older total arriving late never goes back
    for bad in (b"checkpoint 8 x 1", b"__import__('os')", b"forwarded", None, "forwarded 1"):
        heard.heard(bad)
    assert (heard.latest, heard.forwarded) == (7, 130)
    assert heard.checkpoint(7) == (120, 1700000000.5) and heard.checkpoint(8) is None
    assert caplog.text.count("ignored a message") == 5
