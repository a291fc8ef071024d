"""The estimator catalogue: spec names -> scikit-learn estimators -> ONNX, and their metrics.

Training-only: this module imports scikit-learn and skl2onnx at the top, so nothing on the
serving path may import it (tests/unit/test_scorer.py checks the worker modules don't).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.errors import TrainingError
from models.manifest import Task
from streams.spec import ESTIMATOR_TASK, TrainModel

Floats = npt.NDArray[np.float64]

TASK_OF: dict[str, Task] = ESTIMATOR_TASK  # the spec checks it at load, training again
# Pinned rather than "latest": a model trained with a newer skl2onnx must still load in the
# (possibly older) onnxruntime of a running worker. Both sides accept these here.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "input"
# ONNX computes in float32: probabilities must agree with scikit-learn to this absolute
# gap; regression predictions to this gap relative to max(1, |prediction|).
PARITY_TOLERANCE = 1e-5


def make_estimator(model: TrainModel, seed: int) -> tuple[Any, dict[str, Any]]:
    """An unfitted estimator for a spec entry and the parameters it was given.

    Seeded estimators get ``random_state=seed`` unless the spec sets one; the returned
    parameters are what the manifest records.
    """
    params = dict(model.params)
    try:
        match model.estimator:
            case "logistic_regression":
                # Scaling first: lbfgs converges on raw amounts and counts only slowly.
                params = {"max_iter": 1000, "random_state": seed, **params}
                scaled = [("scale", StandardScaler()), ("model", LogisticRegression(**params))]
                return Pipeline(scaled), params
            case "gradient_boosting":
                params = {"random_state": seed, **params}
                return GradientBoostingClassifier(**params), params
            case "random_forest":
                params = {"random_state": seed, **params}
                return RandomForestClassifier(**params), params
            case "linear_regression":
                return LinearRegression(**params), params
            case "gradient_boosting_regressor":
                params = {"random_state": seed, **params}
                return GradientBoostingRegressor(**params), params
    except TypeError as exc:  # an unknown keyword in params
        msg = f"bad params {model.params} for {model.estimator}: {exc}"
        raise TrainingError(model.name, msg) from exc
    msg = f"unknown estimator {model.estimator!r}"  # the spec's Literal makes this unreachable
    raise TrainingError(model.name, msg)


def to_onnx_bytes(estimator: Any, width: int, task: Task) -> bytes:
    """Convert a fitted estimator: float input ``input`` of shape [None, width]; classifiers
    output a plain ``probabilities`` matrix (zipmap off: it costs ~6x at serving)."""
    options = {id(estimator): {"zipmap": False}} if task == "classification" else None
    onnx_model = convert_sklearn(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, width]))],
        options=options,
        target_opset=TARGET_OPSET,
    )
    return bytes(onnx_model.SerializeToString())


def reference_scores(estimator: Any, matrix: npt.NDArray[np.float32], task: Task) -> Floats:
    """scikit-learn's own scores, in the scorer's convention (last class's probability)."""
    if task == "classification":
        return np.asarray(estimator.predict_proba(matrix), dtype=np.float64)[:, -1]
    return np.asarray(estimator.predict(matrix), dtype=np.float64).reshape(-1)


def parity_gap(onnx_scores: Floats, reference: Floats, task: Task) -> float:
    """The largest disagreement, on the scale ``PARITY_TOLERANCE`` is stated in."""
    if onnx_scores.shape != reference.shape:
        return float("inf")
    gap = np.abs(onnx_scores - reference)
    if task == "regression":
        gap = gap / np.maximum(1.0, np.abs(reference))
    return float(gap.max(initial=0.0))


def offline_metrics(labels: Floats, scores: Floats, task: Task) -> dict[str, float]:
    """Holdout metrics: ROC AUC, log loss and accuracy (at 0.5) for classification; RMSE,
    MAE and R² for regression."""
    if task == "classification":
        metrics = {
            "log_loss": float(log_loss(labels, scores, labels=[0, 1])),
            "accuracy": float(accuracy_score(labels, scores >= 0.5)),
            "positive_rate": float(np.mean(labels)),
        }
        if len(np.unique(labels)) == 2:  # AUC is undefined on a one-class holdout
            metrics["roc_auc"] = float(roc_auc_score(labels, scores))
        return metrics
    return {
        "rmse": float(np.sqrt(mean_squared_error(labels, scores))),
        "mae": float(mean_absolute_error(labels, scores)),
        "r2": float(r2_score(labels, scores)),
    }
