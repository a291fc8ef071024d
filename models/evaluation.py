"""Rolling online evaluation: how each model scores the most recent labelled events.

Every model (primary, shadows, the online learner) gets its own window of the last
``window`` labelled events. A classification pipeline's, with River's rolling metrics:

- ``accuracy``: ``utils.Rolling(metrics.Accuracy, window_size=window)`` on
  ``score >= threshold`` (the decision rule of the predictions topic);
- ``log_loss``: ``utils.Rolling(metrics.LogLoss, window_size=window)`` on the score
  (River clamps it away from 0 and 1);
- ``roc_auc``: ``metrics.RollingROCAUC(window_size=window)``, exact over the window. While
  the window holds one class only, ROC AUC is undefined: ``snapshot`` reports NaN then
  (River itself answers 0.0, which would read as "always wrong").

A regression pipeline's (``task="regression"``: scores are predicted values, labels finite
numbers; no threshold, nothing classification-specific), computed from the window's
(label, score) pairs each time, so exactly the window's figures:

- ``mae``: mean absolute error, ``mean(|score - label|)``;
- ``rmse``: root mean squared error, ``sqrt(mean((score - label)**2))``.

``snapshot`` also gives ``count`` (labelled events since start) and ``window_count``
(events in the window). ``to_bytes`` / ``from_bytes`` checkpoint it with the learner as
JSON data (no pickle: reading it runs no code from the bytes), continuing exactly.

>>> evaluation = RollingEvaluation(window=3)
>>> for score, label in [(0.9, 1), (0.2, 0), (0.7, 0), (0.4, 1)]:
...     evaluation.update("fraud_gbt", score, label)
>>> {metric: round(value, 3) for metric, value in evaluation.snapshot()["fraud_gbt"].items()}
{'count': 4.0, 'window_count': 3.0, 'accuracy': 0.333, 'log_loss': 0.781, 'roc_auc': 0.5}
>>> evaluation.update("fraud_river", 0.5, 0)
>>> evaluation.snapshot()["fraud_river"]["roc_auc"]  # one class so far: undefined
nan
>>> restored = RollingEvaluation.from_bytes(evaluation.to_bytes())
>>> restored.snapshot() == evaluation.snapshot()
True
>>> regression = RollingEvaluation(window=2, task="regression")
>>> regression.update_many("eta_gbr", [10.0, 12.0, 20.0], [11.0, 12.0, 17.0])
>>> {metric: round(value, 3) for metric, value in regression.snapshot()["eta_gbr"].items()}
{'count': 3.0, 'window_count': 2.0, 'mae': 1.5, 'rmse': 2.121}
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
from river import metrics, utils

from models.errors import ModelError
from models.manifest import Task
from models.online import as_label, as_target
from models.river_state import StateError, export_state, restore_state

_FORMAT = 1  # a stored evaluation without "task" is a classification one (written before)
_WINDOW_KEYS = {"count", "labels", "decisions", "scores", "accuracy", "log_loss"}
_REGRESSION_KEYS = {"count", "labels", "scores"}


class EvaluationError(ModelError):
    """An update the metrics cannot take (a classifier's score that is not a probability, a
    regressor's that is not finite)."""

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(f"evaluation of model {model!r}: {detail}")
        self.model = model


class EvaluationStateError(ModelError):
    """Stored evaluation bytes cannot be restored (not ours, another format, damaged)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"stored rolling evaluation: {detail}")


class _ModelWindow:
    """One model's rolling metrics and the class balance of its window."""

    def __init__(self, window: int) -> None:
        # Any: River's Rolling forwards get() through __getattr__, and RollingROCAUC is
        # untyped in River 0.26.
        self.accuracy: Any = utils.Rolling(metrics.Accuracy, window_size=window)
        self.log_loss: Any = utils.Rolling(metrics.LogLoss, window_size=window)
        self.roc_auc: Any = metrics.RollingROCAUC(window_size=window)  # type: ignore[no-untyped-call]
        self.labels: collections.deque[bool] = collections.deque(maxlen=window)
        # The window's decisions and scores as plain values too (River's windows hold them
        # inside (args, kwargs) pairs): a checkpoint, every label batch, copies these in C.
        self.decisions: collections.deque[bool] = collections.deque(maxlen=window)
        self.scores: collections.deque[float] = collections.deque(maxlen=window)
        self.positives = 0
        self.count = 0

    def update(self, score: float, label: bool, decision: bool) -> None:
        if len(self.labels) == self.labels.maxlen and self.labels[0]:
            self.positives -= 1
        self.labels.append(label)
        self.decisions.append(decision)
        self.scores.append(score)
        self.positives += label
        self.count += 1
        self.accuracy.update(label, decision)
        self.log_loss.update(label, score)
        self.roc_auc.update(label, score)

    def snapshot(self) -> dict[str, float]:
        in_window = len(self.labels)
        both_classes = 0 < self.positives < in_window
        return {
            "count": float(self.count),
            "window_count": float(in_window),
            "accuracy": float(self.accuracy.get()),
            "log_loss": float(self.log_loss.get()),
            "roc_auc": float(self.roc_auc.get()) if both_classes else math.nan,
        }

    def to_data(self) -> dict[str, Any]:
        """The window as three flat lists (labels, decisions, scores), the count, and the
        River state of the accuracy and log-loss metrics (``models.river_state``), whose
        running sums depend on the whole history, not on the window alone. ROC AUC is
        rebuilt from the window's labels and scores: River keeps it in a Rust extension,
        and over a window it is exact from the window's pairs."""
        return {
            "count": self.count,
            "labels": list(self.labels),
            "decisions": list(self.decisions),
            "scores": list(self.scores),
            "accuracy": export_state(self.accuracy.obj),
            "log_loss": export_state(self.log_loss.obj),
        }

    @classmethod
    def from_data(cls, window: int, data: Any, path: str) -> _ModelWindow:
        if not isinstance(data, dict) or data.keys() != _WINDOW_KEYS:
            msg = f"{path} is not a model window: {str(data)[:80]}"
            raise EvaluationStateError(msg)
        count, labels, decisions, scores = (
            data[k] for k in ("count", "labels", "decisions", "scores")
        )
        if type(count) is not int or count < 0:
            msg = f"{path}.count must be a non-negative integer, got {count!r:.40}"
            raise EvaluationStateError(msg)
        expected = min(count, window)
        for name, values, kind in (
            ("labels", labels, bool),
            ("decisions", decisions, bool),
            ("scores", scores, float),
        ):
            if not isinstance(values, list) or len(values) != expected:
                msg = f"{path}.{name} must hold the window's {expected} values"
                raise EvaluationStateError(msg)
            if not all(type(v) is kind for v in values):
                msg = f"{path}.{name} must be {kind.__name__}s"
                raise EvaluationStateError(msg)
        if not all(0.0 <= score <= 1.0 for score in scores):
            msg = f"{path}.scores must be probabilities in [0, 1]"
            raise EvaluationStateError(msg)
        state = cls(window)
        try:
            restore_state(state.accuracy.obj, data["accuracy"], f"{path}.accuracy")
            restore_state(state.log_loss.obj, data["log_loss"], f"{path}.log_loss")
        except StateError as exc:
            raise EvaluationStateError(str(exc)) from exc
        # utils.Rolling keeps each update's (args, kwargs) to revert it when it leaves.
        state.accuracy.window.extend(((y, d), {}) for y, d in zip(labels, decisions, strict=True))
        state.log_loss.window.extend(((y, p), {}) for y, p in zip(labels, scores, strict=True))
        for label, score in zip(labels, scores, strict=True):
            state.roc_auc.update(label, score)
        state.labels.extend(labels)
        state.decisions.extend(decisions)
        state.scores.extend(scores)
        state.positives = sum(labels)
        state.count = count
        return state


class _RegressionWindow:
    """One regression model's last ``window`` (label, score) pairs; MAE and RMSE are
    computed from them when asked (exact over the window, no running sums to drift)."""

    def __init__(self, window: int) -> None:
        self.labels: collections.deque[float] = collections.deque(maxlen=window)
        self.scores: collections.deque[float] = collections.deque(maxlen=window)
        self.count = 0

    def update(self, score: float, label: float) -> None:
        self.labels.append(label)
        self.scores.append(score)
        self.count += 1

    def snapshot(self) -> dict[str, float]:
        errors = np.fromiter(self.scores, np.float64, len(self.scores)) - np.fromiter(
            self.labels, np.float64, len(self.labels)
        )
        empty = not len(errors)
        return {
            "count": float(self.count),
            "window_count": float(len(errors)),
            "mae": math.nan if empty else float(np.mean(np.abs(errors))),
            "rmse": math.nan if empty else float(np.sqrt(np.mean(errors * errors))),
        }

    def to_data(self) -> dict[str, Any]:
        return {"count": self.count, "labels": list(self.labels), "scores": list(self.scores)}

    @classmethod
    def from_data(cls, window: int, data: Any, path: str) -> _RegressionWindow:
        if not isinstance(data, dict) or data.keys() != _REGRESSION_KEYS:
            msg = f"{path} is not a regression model window: {str(data)[:80]}"
            raise EvaluationStateError(msg)
        count, labels, scores = data["count"], data["labels"], data["scores"]
        if type(count) is not int or count < 0:
            msg = f"{path}.count must be a non-negative integer, got {count!r:.40}"
            raise EvaluationStateError(msg)
        expected = min(count, window)
        for name, values in (("labels", labels), ("scores", scores)):
            if not isinstance(values, list) or len(values) != expected:
                msg = f"{path}.{name} must hold the window's {expected} values"
                raise EvaluationStateError(msg)
            if not all(type(v) is float and math.isfinite(v) for v in values):
                msg = f"{path}.{name} must be finite floats"
                raise EvaluationStateError(msg)
        state = cls(window)
        state.labels.extend(labels)
        state.scores.extend(scores)
        state.count = count
        return state


class RollingEvaluation:
    """Per-model rolling metrics over the last ``window`` labels: accuracy, log loss and
    ROC AUC (``task="classification"``), or MAE and RMSE (``task="regression"``).

    Not thread-safe; the label join that feeds it owns it.
    """

    def __init__(self, window: int = 1000, task: Task = "classification") -> None:
        if window < 1:
            msg = f"window must be at least 1 labelled event, got {window}"
            raise ValueError(msg)
        if task not in ("classification", "regression"):
            msg = f"task must be 'classification' or 'regression', got {task!r}"
            raise ValueError(msg)
        self.window = window
        self.task: Task = task
        self._models: dict[str, _ModelWindow | _RegressionWindow] = {}

    @property
    def models(self) -> list[str]:
        return sorted(self._models)

    def update(self, model: str, score: float, label: object, threshold: float = 0.5) -> None:
        """Record one labelled event scored ``score`` by ``model``.

        Classification: ``score`` is a probability, ``label`` 0/1 or a bool (anything else
        raises ``LabelError``), and the decision counted by accuracy is ``score >=
        threshold``. Regression: ``score`` and ``label`` are finite numbers and
        ``threshold`` is ignored (a regressor makes no decision).
        """
        self._update(model, [(None, score, label)], threshold)

    def update_many(
        self,
        model: str,
        scores: Iterable[float],
        labels: Iterable[object],
        threshold: float = 0.5,
    ) -> None:
        """``update`` for each (score, label) pair, in order. Every pair is checked first:
        a bad one raises and records nothing."""
        score_list, label_list = list(scores), list(labels)
        if len(score_list) != len(label_list):
            detail = f"{len(score_list)} scores for {len(label_list)} labels"
            raise EvaluationError(model, detail)
        pairs = zip(range(len(score_list)), score_list, label_list, strict=True)
        self._update(model, list(pairs), threshold)

    def _update(
        self, model: str, pairs: list[tuple[int | None, float, object]], threshold: float
    ) -> None:
        """Check every (index, score, label) first, then record them in order."""
        if self.task == "regression":
            targets = [self._checked_target(model, s, y, i) for i, s, y in pairs]
            regression = self._models.get(model)
            if regression is None:
                regression = self._models[model] = _RegressionWindow(self.window)
            assert isinstance(regression, _RegressionWindow)
            for value, target in targets:
                regression.update(value, target)
            return
        self._check_threshold(model, threshold)
        checked = [self._checked(model, score, label, i) for i, score, label in pairs]
        window = self._models.get(model)
        if window is None:
            window = self._models[model] = _ModelWindow(self.window)
        assert isinstance(window, _ModelWindow)
        for value, truth in checked:
            window.update(value, truth, value >= threshold)

    @staticmethod
    def _checked_target(
        model: str, score: float, label: object, index: int | None
    ) -> tuple[float, float]:
        target = as_target(label, model, index)
        value = float(score)
        if not math.isfinite(value):
            where = "score" if index is None else f"score #{index}"
            detail = f"{where} {score!r} is not a finite number (regression)"
            raise EvaluationError(model, detail)
        return value, target

    @staticmethod
    def _checked(
        model: str, score: float, label: object, index: int | None = None
    ) -> tuple[float, bool]:
        truth = as_label(label, model, index)
        value = float(score)
        if not 0.0 <= value <= 1.0:  # also refuses NaN
            where = "score" if index is None else f"score #{index}"
            detail = f"{where} {score!r} is not a probability in [0, 1]"
            raise EvaluationError(model, detail)
        return value, truth

    @staticmethod
    def _check_threshold(model: str, threshold: float) -> None:
        if not 0.0 <= threshold <= 1.0:
            detail = f"threshold {threshold!r} is not in [0, 1]"
            raise EvaluationError(model, detail)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per model: ``accuracy``, ``log_loss``, ``roc_auc`` (NaN while the window holds a
        single class), or for regression ``mae`` and ``rmse``; ``count`` and
        ``window_count``."""
        return {name: self._models[name].snapshot() for name in sorted(self._models)}

    def to_bytes(self) -> bytes:
        """JSON data (see ``models.river_state``) from which ``from_bytes`` continues exactly."""
        models = {name: state.to_data() for name, state in self._models.items()}
        return orjson.dumps(
            {"format": _FORMAT, "task": self.task, "window": self.window, "models": models}
        )

    @classmethod
    def from_bytes(cls, data: bytes, task: Task | None = None) -> RollingEvaluation:
        """Restore ``to_bytes`` output into metrics built here; anything else (a pickle,
        another format, state that does not fit, or an evaluation of another task than
        ``task`` when given) raises ``EvaluationStateError``."""
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            kind = "a pickle, never loaded" if data[:1] == b"\x80" else f"not JSON: {exc}"
            msg = f"not an evaluation of format {_FORMAT} ({kind})"
            raise EvaluationStateError(msg) from exc
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            msg = f"not an evaluation of format {_FORMAT}"
            raise EvaluationStateError(msg)
        window, models = state.get("window"), state.get("models")
        if type(window) is not int or window < 1 or not isinstance(models, dict):
            msg = f"window {window!r:.40} or models {models!r:.40} is not valid"
            raise EvaluationStateError(msg)
        stored = state.get("task", "classification")
        if stored not in ("classification", "regression"):
            msg = f"task {stored!r:.40} is not valid"
            raise EvaluationStateError(msg)
        if task is not None and stored != task:
            msg = f"it evaluates a {stored} task, the pipeline's is {task}"
            raise EvaluationStateError(msg)
        evaluation = cls(window, stored)
        window_type: type[_RegressionWindow] | type[_ModelWindow] = (
            _RegressionWindow if stored == "regression" else _ModelWindow
        )
        for name, model in models.items():
            evaluation._models[name] = window_type.from_data(window, model, f"models[{name!r}]")
        return evaluation
