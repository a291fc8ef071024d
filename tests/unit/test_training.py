"""Spec-driven training on small synthetic frames (no Feast, no Kafka)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import training
from models.errors import TrainingError
from models.inputs import InputLayout
from models.registry import ModelRegistry
from models.scorer import OnnxScorer
from models.training import load_training_frame, train_models
from streams.errors import SpecError
from streams.spec import PipelineSpec, load_spec_text

SPEC = """
name: train-demo
input: {topic: events}
event:
  id_field: id
  time_field: ts
  fields:
    id: {type: string}
    user: {type: string}
    ts: {type: timestamp}
    amount: {type: float, min: 0}
    channel: {type: category, values: [web, pos, atm]}
    is_new: {type: bool, required: false, default: false}
entity: {field: user, join_key: user_id}
features:
  repo: repo
  refs: ["user_stats:spend_7d", "user_stats:txn_count_7d"]
  defaults: {"user_stats:spend_7d": 0.0, "user_stats:txn_count_7d": 1.0}
model_input:
  - event: amount
  - {event: channel, encode: one_hot}
  - event: is_new
  - feature: "user_stats:spend_7d"
  - feature: "user_stats:txn_count_7d"
model: {name: MODEL}
output: {topic: scores, dead_letter_topic: events-dlq}
training:
  dataset: data/train.parquet
  label: LABEL
  task: TASK
  models: MODELS
"""
CLASSIFIERS = """
    - {name: fraud_lr, estimator: logistic_regression}
    - {name: fraud_gbc, estimator: gradient_boosting, params: {n_estimators: 30, max_depth: 3}}
    - {name: fraud_rf, estimator: random_forest, params: {n_estimators: 20, max_depth: 6}}"""
REGRESSORS = """
    - {name: spend_lin, estimator: linear_regression}
    - {name: spend_gbr, estimator: gradient_boosting_regressor, params: {n_estimators: 40}}"""


def make_spec(tmp_path: Path, task: str, models: str = "") -> PipelineSpec:
    label = "is_fraud" if task == "classification" else "next_spend"
    default = CLASSIFIERS if task == "classification" else REGRESSORS
    text = (
        SPEC.replace("MODELS", models or default)
        .replace("LABEL", label)
        .replace("TASK", task)
        .replace("MODEL", "fraud_gbc" if task == "classification" else "spend_lin")
    )
    return load_spec_text(text, base_dir=tmp_path)


def make_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Events + features (named view__feature) with a learnable label of each kind."""
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 40.0, size=n)
    channel = rng.choice(["web", "pos", "atm"], size=n)
    spend = rng.gamma(2.0, 200.0, size=n)
    count = rng.poisson(5, size=n).astype(float)
    is_new = rng.random(n) < 0.2
    logit = 0.06 * (amount - 80) + 3.0 * (channel == "web") - 0.008 * (spend - 400) + 2 * is_new
    frame = pd.DataFrame(
        {
            "id": [f"e{i}" for i in range(n)],
            "user": rng.choice([f"u{i}" for i in range(50)], size=n),
            "ts": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
            "amount": amount,
            "channel": channel,
            "is_new": pd.array(np.where(rng.random(n) < 0.1, None, is_new), dtype="boolean"),
            "user_stats__spend_7d": spend,
            "user_stats__txn_count_7d": count,
        }
    )
    frame["is_fraud"] = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame["next_spend"] = 0.8 * spend + 5.0 * count + 0.5 * amount + rng.normal(0, 10, size=n)
    return frame


def write_dataset(spec: PipelineSpec, frame: pd.DataFrame) -> Path:
    assert spec.training is not None
    path = spec.training.dataset
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return path


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_classification_models_are_trained_and_registered(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    spec = make_spec(tmp_path, "classification")
    frame = make_frame()
    dataset = write_dataset(spec, frame)
    versions = train_models(spec, frame, registry, seed=7)
    assert [(v.name, v.version) for v in versions] == [
        ("fraud_lr", 1),
        ("fraud_gbc", 1),
        ("fraud_rf", 1),
    ]
    for version in versions:
        manifest = version.manifest
        data = manifest.training_data
        assert data.path == str(dataset)
        assert data.sha256 == hashlib.sha256(dataset.read_bytes()).hexdigest()
        assert (data.rows, data.train_rows, data.holdout_rows) == (600, 480, 120)
        assert manifest.input_columns == tuple(spec.input_columns())
        assert manifest.task == "classification" and manifest.classes == (False, True)
        assert manifest.seed == 7 and manifest.pipeline == "train-demo"
        assert set(manifest.metrics) >= {"roc_auc", "log_loss", "accuracy"}
        assert manifest.metrics["roc_auc"] > 0.75, manifest.metrics
        assert 0 < manifest.metrics["log_loss"] < 0.69
        assert set(manifest.libraries) >= {"scikit-learn", "skl2onnx", "onnxruntime"}
        assert registry.aliases(version.name) == {"champion": 1}
    assert versions[1].manifest.params == {"n_estimators": 30, "max_depth": 3, "random_state": 7}
    assert versions[0].manifest.params["max_iter"] == 1000


def test_registered_model_scores_the_serving_layout(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    spec = make_spec(tmp_path, "classification")
    frame = make_frame()
    write_dataset(spec, frame)
    train_models(spec, frame, registry)
    scorer = OnnxScorer.from_version(registry.resolve("fraud_gbc", "champion"))
    scorer.require_columns(spec.input_columns())
    events = [{"amount": 500.0, "channel": "web"}, {"amount": 5.0, "channel": "atm"}]
    features = np.array([[50.0, 3.0], [900.0, 6.0]])
    scores = scorer.score(InputLayout(spec).build(events, features))
    assert scores[0] > scores[1]


def test_regression_models_are_trained_and_registered(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    spec = make_spec(tmp_path, "regression")
    frame = make_frame()
    write_dataset(spec, frame)
    versions = train_models(spec, frame, registry)
    assert [v.name for v in versions] == ["spend_lin", "spend_gbr"]
    for version in versions:
        metrics = version.manifest.metrics
        assert set(metrics) == {"rmse", "mae", "r2"}
        assert metrics["r2"] > 0.8, metrics
        assert 0 < metrics["mae"] <= metrics["rmse"]
        assert version.manifest.classes is None


def test_retraining_adds_versions_and_is_deterministic(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    spec = make_spec(tmp_path, "classification")
    frame = make_frame()
    write_dataset(spec, frame)
    first = train_models(spec, frame, registry, seed=3)
    second = train_models(spec, frame, registry, seed=3)
    assert [v.version for v in second] == [2, 2, 2]
    assert [v.manifest.metrics for v in first] == [v.manifest.metrics for v in second]
    assert registry.resolve("fraud_rf", "champion").version == 1  # not auto-promoted


def test_onnx_disagreement_fails_loudly_and_registers_nothing(
    tmp_path: Path, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(tmp_path, "classification")
    frame = make_frame()
    write_dataset(spec, frame)
    monkeypatch.setattr(training, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(TrainingError, match="'fraud_lr': ONNX scores differ"):
        train_models(spec, frame, registry)
    assert registry.names() == []


def test_estimator_must_fit_the_task(tmp_path: Path) -> None:
    """Refused when the spec is loaded, before any training."""
    models = "\n    - {name: wrong, estimator: linear_regression}"
    with pytest.raises(
        SpecError,
        match=r"training.models\[0\].estimator: 'linear_regression' is a regression"
        " estimator but the pipeline's task is classification",
    ):
        make_spec(tmp_path, "classification", models)


def test_bad_params_name_the_model(tmp_path: Path, registry: ModelRegistry) -> None:
    models = "\n    - {name: typo, estimator: random_forest, params: {n_trees: 5}}"
    spec = make_spec(tmp_path, "classification", models)
    write_dataset(spec, make_frame())
    with pytest.raises(TrainingError, match="'typo': bad params .*n_trees"):
        train_models(spec, make_frame(), registry)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(is_fraud=np.arange(len(f)) % 3), "classification needs 2"),
        (lambda f: f.assign(is_fraud=f["is_fraud"].where(f.index > 5)), "6 rows have no label"),
        (
            lambda f: f.assign(user_stats__spend_7d=np.nan),
            r"\['user_stats__spend_7d'\] have missing",
        ),
        (lambda f: f.drop(columns=["amount"]), r"frame lacks columns \['amount'\]"),
    ],
)
def test_bad_frames_are_refused(
    tmp_path: Path, registry: ModelRegistry, change: Any, message: str
) -> None:
    spec = make_spec(tmp_path, "classification")
    frame = change(make_frame())
    write_dataset(spec, frame)
    with pytest.raises(TrainingError, match=message):
        train_models(spec, frame, registry)
    assert registry.names() == []


class FakeStore:
    """Stands in for Feast: records the call and, like Feast's file offline store, answers
    once per (key, time), shuffled, with gaps."""

    def __init__(self, lose_rows: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lose_rows = lose_rows

    def get_historical_features(
        self, entity_df: pd.DataFrame, features: list[str], full_feature_names: bool
    ) -> Any:
        self.calls.append(
            {"entity_df": entity_df, "features": features, "full": full_feature_names}
        )
        out = entity_df.drop_duplicates(["user_id", "event_timestamp"])
        out = out.sample(frac=1.0, random_state=0).iloc[self.lose_rows :].copy()
        # Feast may hand back another timestamp resolution than it was given.
        out["event_timestamp"] = out["event_timestamp"].astype("datetime64[us, UTC]")
        out["user_stats__spend_7d"] = np.where(out["user_id"] == "u1", np.nan, 10.0)
        out["user_stats__txn_count_7d"] = np.nan
        return type("Job", (), {"to_df": lambda self: out})()


def dataset_without_features(n: int) -> pd.DataFrame:
    return make_frame(n=n).drop(columns=["user_stats__spend_7d", "user_stats__txn_count_7d"])


@pytest.mark.parametrize("times", ["iso", "epoch_ms"])
def test_load_training_frame_joins_point_in_time(tmp_path: Path, times: str) -> None:
    spec = make_spec(tmp_path, "classification")
    data = dataset_without_features(40)
    if times == "iso":
        data["ts"] = data["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        data["ts"] = data["ts"].astype("int64") // 1_000_000
    write_dataset(spec, data)
    store = FakeStore()
    frame = load_training_frame(spec, store)
    (call,) = store.calls
    assert call["features"] == ["user_stats:spend_7d", "user_stats:txn_count_7d"]
    assert call["full"] is True
    entity_df = call["entity_df"]
    assert list(entity_df.columns) == ["user_id", "event_timestamp"]
    assert (entity_df["user_id"] == data["user"]).all()
    assert str(entity_df["event_timestamp"].dt.tz) == "UTC"
    assert entity_df["event_timestamp"].iloc[1] == pd.Timestamp("2024-01-01T00:01:00Z")
    assert frame["id"].tolist() == [f"e{i}" for i in range(40)]  # the dataset's order
    spend = frame["user_stats__spend_7d"]
    assert (spend[frame["user"] == "u1"] == 0.0).all()  # the spec's default
    assert (spend[frame["user"] != "u1"] == 10.0).all()
    assert (frame["user_stats__txn_count_7d"] == 1.0).all()


def test_events_sharing_entity_and_time_are_all_kept(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "classification")
    data = dataset_without_features(60).assign(ts=pd.Timestamp("2024-01-01", tz="UTC"))
    write_dataset(spec, data)
    store = FakeStore()
    frame = load_training_frame(spec, store)
    assert len(store.calls[0]["entity_df"]) == data["user"].nunique()  # asked once per key
    assert frame["id"].tolist() == data["id"].tolist()
    assert frame["is_fraud"].tolist() == data["is_fraud"].tolist()


def test_rows_feast_did_not_answer_are_an_error(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "classification")
    write_dataset(spec, dataset_without_features(40))
    with pytest.raises(TrainingError, match="no row for 1 of 40 events"):
        load_training_frame(spec, FakeStore(lose_rows=1))


def test_load_training_frame_needs_the_dataset(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "classification")
    with pytest.raises(TrainingError, match="cannot read training dataset .*train.parquet"):
        load_training_frame(spec, FakeStore())
