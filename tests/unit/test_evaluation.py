"""Rolling online evaluation: River's rolling metrics per model, checked against River
directly and against scikit-learn on the same window; a one-class window gives NaN AUC;
it is stored as data and continues exactly."""

from __future__ import annotations

import doctest
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from river import metrics, utils
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

import models.evaluation
from models.evaluation import EvaluationError, EvaluationStateError, RollingEvaluation
from models.online import LabelError
from tests.planted import planted_pickle

WINDOW = 50


def stream(n: int = 230, seed: int = 7) -> tuple[list[float], list[int]]:
    """A noisy but informative scorer: positives score higher on average."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.clip(0.25 + 0.35 * labels + rng.normal(0, 0.2, n), 0.0, 1.0)
    scores[:3] = [0.0, 1.0, 0.5]  # edges: clamped by log loss, 0.5 meets the threshold
    return scores.tolist(), labels.tolist()


def test_equals_river_metrics_computed_directly() -> None:
    scores, labels = stream()
    evaluation = RollingEvaluation(window=WINDOW)
    accuracy: Any = utils.Rolling(metrics.Accuracy, window_size=WINDOW)
    loss: Any = utils.Rolling(metrics.LogLoss, window_size=WINDOW)
    auc: Any = metrics.RollingROCAUC(window_size=WINDOW)  # type: ignore[no-untyped-call]
    for i, (score, label) in enumerate(zip(scores, labels, strict=True)):
        evaluation.update("fraud_gbt", score, label, threshold=0.4)
        accuracy.update(bool(label), score >= 0.4)
        loss.update(bool(label), score)
        auc.update(bool(label), score)
        if i % 37 == 0 or i == len(scores) - 1:
            got = evaluation.snapshot()["fraud_gbt"]
            assert got["accuracy"] == accuracy.get()
            assert got["log_loss"] == loss.get()
            window = labels[max(0, i + 1 - WINDOW) : i + 1]
            if 0 < sum(window) < len(window):
                assert got["roc_auc"] == auc.get()
            assert got["count"] == i + 1
            assert got["window_count"] == min(i + 1, WINDOW)


def test_agrees_with_sklearn_on_the_last_window() -> None:
    scores, labels = stream()
    evaluation = RollingEvaluation(window=WINDOW)
    evaluation.update_many("fraud_gbt", scores, labels)
    got = evaluation.snapshot()["fraud_gbt"]
    y, p = np.array(labels[-WINDOW:]), np.array(scores[-WINDOW:])
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
    assert got["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), rel=1e-9)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert 0.6 < got["roc_auc"] <= 1.0
    assert got["count"] == len(scores)


def test_one_class_window_has_nan_auc_and_finite_rest() -> None:
    evaluation = RollingEvaluation(window=4)
    for score in (0.1, 0.3, 0.6):
        evaluation.update("fraud_lr", score, 0)
    first = evaluation.snapshot()["fraud_lr"]
    assert math.isnan(first["roc_auc"])
    assert first["accuracy"] == pytest.approx(2 / 3)
    assert math.isfinite(first["log_loss"]) and first["count"] == 3
    evaluation.update("fraud_lr", 0.9, True)  # both classes now
    assert evaluation.snapshot()["fraud_lr"]["roc_auc"] == 1.0
    for score in (0.8, 0.7, 0.95, 0.6):  # the negative slides out: positives only
        evaluation.update("fraud_lr", score, 1)
    last = evaluation.snapshot()["fraud_lr"]
    assert math.isnan(last["roc_auc"])
    assert last["accuracy"] == 1.0 and last["window_count"] == 4 and last["count"] == 8


def test_models_are_evaluated_separately() -> None:
    evaluation = RollingEvaluation(window=10)
    evaluation.update("fraud_gbt", 0.9, 1)
    evaluation.update("fraud_river", 0.2, 1)
    evaluation.update("fraud_river", 0.1, 0)
    snapshot = evaluation.snapshot()
    assert list(snapshot) == ["fraud_gbt", "fraud_river"] == evaluation.models
    assert snapshot["fraud_gbt"]["accuracy"] == 1.0 and snapshot["fraud_gbt"]["count"] == 1
    assert snapshot["fraud_river"]["accuracy"] == 0.5 and snapshot["fraud_river"]["count"] == 2
    assert set(snapshot["fraud_gbt"]) == {
        "accuracy",
        "log_loss",
        "roc_auc",
        "count",
        "window_count",
    }
    assert RollingEvaluation().snapshot() == {}


@pytest.mark.parametrize("first", [0, 1, 30, 49, 50, 51, 120, 229])
def test_round_trips_as_data_and_continues_identically(first: int) -> None:
    """Whatever the stream's position (window empty, partly full, full, wrapped), the
    restored evaluation reports and continues exactly as the original."""
    scores, labels = stream()
    evaluation = RollingEvaluation(window=WINDOW)
    evaluation.update_many("a", scores[:first], labels[:first], threshold=0.4)
    evaluation.update("b", 0.5, 1)
    data = evaluation.to_bytes()
    assert isinstance(orjson.loads(data), dict)  # JSON, not a pickle
    restored = RollingEvaluation.from_bytes(data)
    assert restored.to_bytes() == data
    assert repr(restored.snapshot()) == repr(evaluation.snapshot())  # repr: NaN == NaN
    for state in (evaluation, restored):
        for i in range(first, len(scores)):
            state.update("a", scores[i], labels[i], threshold=0.4)
            if i % 17 == 0:  # reads in between, as the learner's metrics do
                state.snapshot()
    assert repr(restored.snapshot()) == repr(evaluation.snapshot())
    assert restored.to_bytes() == evaluation.to_bytes()
    assert restored.window == WINDOW and restored.models == ["a", "b"]


def test_a_planted_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(EvaluationStateError, match="a pickle, never loaded"):
        RollingEvaluation.from_bytes(planted_pickle(marker))
    assert not marker.exists()


def test_foreign_or_damaged_evaluations_are_refused() -> None:
    scores, labels = stream()
    evaluation = RollingEvaluation(window=5)
    evaluation.update_many("m", scores[:8], labels[:8])
    good: dict[str, Any] = orjson.loads(evaluation.to_bytes())

    def damaged(**changes: Any) -> bytes:
        model = {**good["models"]["m"], **changes}
        return orjson.dumps({**good, "models": {"m": model}})

    cases = {
        b"{": "not JSON",
        orjson.dumps({**good, "format": 2}): "format 1",
        orjson.dumps({**good, "window": 0}): "window 0",
        damaged(count=-1): "count must be a non-negative integer",
        damaged(labels=good["models"]["m"]["labels"][:-1]): "labels must hold the window's 5",
        damaged(scores=[0.5, 0.5, 0.5, 0.5, 2.0]): "scores must be probabilities",
        damaged(decisions=[1, 0, 1, 0, 1]): "decisions must be bools",
        damaged(log_loss={"objects": [["os.system", {}]]}): "holds an object os.system where",
        damaged(extra=1): "is not a model window",
    }
    for data, message in cases.items():
        with pytest.raises(EvaluationStateError, match=message):
            RollingEvaluation.from_bytes(data)


def test_bad_updates_are_refused_and_change_nothing() -> None:
    evaluation = RollingEvaluation(window=5)
    evaluation.update("m", 0.4, 0)
    before = evaluation.snapshot()
    for label in (2, 0.0, "1", None):
        with pytest.raises(LabelError, match="'m': label is"):
            evaluation.update("m", 0.5, label)
    for score in (1.5, -0.1, float("nan")):
        with pytest.raises(EvaluationError, match=r"model 'm': score .* not a probability"):
            evaluation.update("m", score, 1)
    with pytest.raises(EvaluationError, match="threshold"):
        evaluation.update("m", 0.5, 1, threshold=2.0)
    with pytest.raises(EvaluationError, match="2 scores for 1 labels"):
        evaluation.update_many("m", [0.1, 0.2], [1])
    with pytest.raises(LabelError, match="'m': label #2 is 7"):
        evaluation.update_many("m", [0.1, 0.2, 0.3], [1, 0, 7])
    assert repr(evaluation.snapshot()) == repr(before)
    with pytest.raises(LabelError):
        evaluation.update("new", 0.5, 3)
    assert evaluation.models == ["m"]  # a refused update creates no model either
    with pytest.raises(ValueError, match="window"):
        RollingEvaluation(window=0)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(models.evaluation).failed == 0
