"""The online model: a River model that learns from labelled events one at a time.

A classifier (``logistic_regression``, ``hoeffding_tree``) for a classification pipeline,
whose score is the positive class's probability; a regressor (``linear_regression``) for a
regression pipeline, whose score is the predicted value.

``OnlineLearner`` takes the same float32 input matrix as the ONNX scorer (columns in
``InputLayout`` order), turns each row into ``dict(zip(columns, row))`` and scores it with
River's ``predict_proba_one`` (``predict_one`` for a regressor; a linear model scores a
batch of ``MANY_FROM_ROWS`` rows or more with one ``predict_proba_many``/``predict_many``,
which is faster there); ``learn`` calls ``learn_one`` row by row, in order.
``learn_many`` is deliberately not used: in River it is a mini-batch step whose result is
not the same as looping ``learn_one``.

River is imported only when a learner is built, so the pipeline spec (which embeds
``OnlineModelSpec``) stays cheap to import: importing River's preprocessing or tree modules
costs ~1.5 s here and also loads scikit-learn and SQLAlchemy (through ``river.stream``).

>>> spec = OnlineModelSpec(name="demo_river", model="logistic_regression")
>>> learner = OnlineLearner(spec, ["amount", "count"])
>>> learner.predict_many(np.array([[10.0, 1.0]], dtype=np.float32)).tolist()
[0.5]
>>> learner.learn(np.array([[10.0, 1.0], [900.0, 7.0]], dtype=np.float32), [0, 1])
>>> (learner.version, learner.learned)
(1, 2)
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.errors import ModelError, ModelInputError
from models.manifest import Task
from models.river_state import StateError, export_state, restore_state

OnlineKind = Literal["logistic_regression", "hoeffding_tree", "linear_regression"]
#: What each online model learns; a pipeline's online model must match its task.
ONLINE_TASK: dict[str, Task] = {
    "logistic_regression": "classification",
    "hoeffding_tree": "classification",
    "linear_regression": "regression",
}
_LINEAR = ("logistic_regression", "linear_regression")
Scores = npt.NDArray[np.float64]
_SNAPSHOT_FORMAT = 2  # 1 was a pickle: refused, never unpickled
_UNNAMED = "<snapshot>"  # the name of a snapshot whose spec cannot be read
# From this many rows, a linear model scores faster through River's DataFrame path
# (predict_proba_many) than row by row; measured crossover ~130-190 rows on 9 columns
# (StandardScaler + LR: 3.9 us/row per row; 4.4 at 128, 2.3 at 256, 1.6 at 512 as a frame).
# Hoeffding trees have no predict_proba_many and always go row by row.
MANY_FROM_ROWS = 160
# River's own answer before it has seen a label: both classes equally likely (a regressor
# answers its intercept, 0 unless ``intercept_init`` says otherwise).
PRIOR = 0.5


class OnlineModelError(ModelError):
    """Root of the online learner's errors; ``name`` is the online model's spec name."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"online model {name!r}: {detail}")
        self.name = name


class LabelError(ModelError):
    """A label does not fit the task: not 0/1 or a bool (classification), not a finite
    number (regression). ``name`` is the model it was meant for, ``index`` its position in
    the batch (None for a single label)."""

    def __init__(
        self, name: str, value: object, index: int | None = None, task: Task = "classification"
    ) -> None:
        where = "label" if index is None else f"label #{index}"
        rule = "0, 1 or a bool" if task == "classification" else "finite numbers (regression)"
        super().__init__(f"model {name!r}: {where} is {value!r}: labels must be {rule}")
        self.name = name
        self.value = value
        self.index = index


class SnapshotError(OnlineModelError):
    """A snapshot cannot be restored (not ours, another format or another River)."""


class _LinearParams(BaseModel):
    """``river.linear_model.LogisticRegression`` and ``LinearRegression`` arguments a YAML
    spec can express (the two take the same ones; their loss is left to River's default).

    ``learning_rate`` is ours: it becomes ``optimizer=optim.SGD(learning_rate)`` (River's
    default optimizer is ``SGD(0.01)``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(default=0.01, gt=0)
    l2: float = Field(default=0.0, ge=0)
    l1: float = Field(default=0.0, ge=0)
    intercept_init: float = 0.0
    intercept_lr: float = Field(default=0.01, ge=0)
    clip_gradient: float = Field(default=1e12, gt=0)


class _HoeffdingParams(BaseModel):
    """``river.tree.HoeffdingTreeClassifier`` arguments a YAML spec can express. River
    itself only warns and falls back to a default on an unknown ``split_criterion`` or
    ``leaf_prediction``; here they are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_period: int = Field(default=200, ge=1)
    max_depth: int | None = Field(default=None, ge=1)
    split_criterion: Literal["gini", "info_gain", "hellinger"] = "info_gain"
    delta: float = Field(default=1e-7, gt=0, lt=1)
    tau: float = Field(default=0.05, ge=0)
    leaf_prediction: Literal["mc", "nb", "nba"] = "nba"
    nb_threshold: int = Field(default=0, ge=0)
    nominal_attributes: tuple[str, ...] | None = None
    binary_split: bool = False
    min_branch_fraction: float = Field(default=0.01, ge=0, le=1)
    max_share_to_split: float = Field(default=0.99, ge=0, le=1)
    max_size: float = Field(default=100.0, gt=0, description="MiB")
    memory_estimate_period: int = Field(default=1_000_000, ge=1)
    stop_mem_management: bool = False
    remove_poor_attrs: bool = False
    merit_preprune: bool = True


_PARAMS: dict[str, type[_LinearParams] | type[_HoeffdingParams]] = {
    "logistic_regression": _LinearParams,
    "hoeffding_tree": _HoeffdingParams,
    "linear_regression": _LinearParams,
}


class OnlineModelSpec(BaseModel):
    """The pipeline spec's online model: which River model, its parameters, and whether a
    ``StandardScaler`` (itself learning online) goes in front. Its ``task`` must be the
    pipeline's (checked by the pipeline spec).

    ``params`` are checked here, without importing River, so a typo fails at spec load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    model: OnlineKind = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)
    scale: bool = Field(default=True, description="Put river's StandardScaler in front.")

    @model_validator(mode="after")
    def _check_params(self) -> OnlineModelSpec:
        try:
            _PARAMS[self.model].model_validate(self.params)
        except ValidationError as exc:
            problems = "; ".join(
                f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            msg = f"bad params for {self.model}: {problems}"
            raise ValueError(msg) from exc
        return self

    @property
    def task(self) -> Task:
        return ONLINE_TASK[self.model]

    @staticmethod
    def kinds_for(task: Task) -> list[str]:
        """The online models of ``task``, for an error message."""
        return [kind for kind, of in ONLINE_TASK.items() if of == task]

    def river_kwargs(self) -> dict[str, Any]:
        """The constructor arguments the spec sets (River's defaults for the rest), with
        ``learning_rate`` still unconverted."""
        return _PARAMS[self.model].model_validate(self.params).model_dump(exclude_unset=True)


def build_river_model(spec: OnlineModelSpec) -> Any:
    """A fresh, untrained River estimator (``StandardScaler() | model`` when ``scale``)."""
    from river import linear_model, optim, preprocessing, tree

    kwargs = spec.river_kwargs()
    model: Any
    if spec.model in _LINEAR:
        rate = kwargs.pop("learning_rate", None)
        optimizer = None if rate is None else optim.SGD(rate)
        linear = (
            linear_model.LogisticRegression
            if spec.model == "logistic_regression"
            else linear_model.LinearRegression
        )
        model = linear(optimizer=optimizer, **kwargs)
    else:
        if kwargs.get("nominal_attributes") is not None:
            kwargs["nominal_attributes"] = list(kwargs["nominal_attributes"])
        model = tree.HoeffdingTreeClassifier(**kwargs)
    return preprocessing.StandardScaler() | model if spec.scale else model


def as_label(value: object, name: str, index: int | None = None) -> bool:
    """``value`` as a bool label: True/False, 1/0 (Python or NumPy). Floats, strings and
    any other number are refused, so a regression target never trains a classifier."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    raise LabelError(name, value, index)


def as_target(value: object, name: str, index: int | None = None) -> float:
    """``value`` as a regression target: a finite int or float (Python or NumPy). Bools,
    strings, NaN and infinities are refused: one would poison a linear model's weights
    for good, and a bool is a classification label."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    ):
        try:
            target = float(value)
        except OverflowError:  # an int past the float range
            target = math.inf
        if math.isfinite(target):
            return target
    raise LabelError(name, value, index, task="regression")


def as_truth(task: Task, value: object, name: str, index: int | None = None) -> float:
    """The label of ``task``: ``as_label`` (as 0.0/1.0) or ``as_target``."""
    if task == "classification":
        return float(as_label(value, name, index))
    return as_target(value, name, index)


class OnlineLearner:
    """A River model behind the scorer's matrix interface, with snapshot support.

    ``version`` counts the ``learn`` calls that learned at least one row; ``learned``
    counts rows. Not thread-safe: call predict and learn from one thread (or lock).
    """

    def __init__(self, spec: OnlineModelSpec, columns: Sequence[str]) -> None:
        self.spec = spec
        self.columns: tuple[str, ...] = tuple(columns)
        if not self.columns or len(set(self.columns)) != len(self.columns):
            msg = f"columns must be non-empty and distinct, got {list(self.columns)}"
            raise OnlineModelError(spec.name, msg)
        nominal = spec.river_kwargs().get("nominal_attributes") or ()
        unknown = [c for c in nominal if c not in self.columns]
        if unknown:
            msg = f"params.nominal_attributes {unknown} are not input columns"
            raise OnlineModelError(spec.name, msg)
        self.width = len(self.columns)
        self.version = 0
        self.learned = 0
        self._model: Any = build_river_model(spec)

    @property
    def name(self) -> str:
        return self.spec.name

    def predict_many(self, matrix: npt.NDArray[Any]) -> Scores:
        """A classifier's positive-class probability of every row (0.5 for all before any
        learning), a regressor's predicted value (its intercept before any learning).

        Row by row with ``predict_proba_one`` (``predict_one``), or for a linear model with
        at least ``MANY_FROM_ROWS`` rows, one ``predict_proba_many`` (``predict_many``)
        call. Has no side effects (River's unsupervised steps learn in ``learn_one`` only).
        """
        self._check_shape(matrix)
        if len(matrix) >= MANY_FROM_ROWS and self.spec.model in _LINEAR:
            return self._predict_frame(matrix)
        rows = self._rows(matrix)
        columns = self.columns
        out = np.empty(len(rows), dtype=np.float64)
        if self.spec.task == "regression":
            predict_value = self._model.predict_one
            for i, row in enumerate(rows):
                out[i] = predict_value(dict(zip(columns, row, strict=True)))
            return out
        predict = self._model.predict_proba_one
        for i, row in enumerate(rows):
            proba = predict(dict(zip(columns, row, strict=True)))
            # An untrained tree answers {}; once it has seen one class only, the other is 0.
            out[i] = proba.get(True, 0.0) if proba else PRIOR
        return out

    def _predict_frame(self, matrix: npt.NDArray[Any]) -> Scores:
        """River's mini-batch prediction (a DataFrame through ``predict_proba_many``): same
        weights, vectorised; agrees with the per-row path to ~1e-16."""
        import pandas as pd

        frame = pd.DataFrame(matrix.astype(np.float64, copy=False), columns=list(self.columns))
        if self.spec.task == "regression":
            return np.asarray(self._model.predict_many(frame), dtype=np.float64)
        proba = self._model.predict_proba_many(frame)
        return np.asarray(proba[True], dtype=np.float64)

    def learn(self, matrix: npt.NDArray[Any], labels: Iterable[object]) -> None:
        """Learn every row, in order, with ``learn_one``. All labels and values are checked
        first: a bad batch raises and teaches the model nothing."""
        rows = self._rows(matrix)
        targets: list[bool] | list[float]
        if self.spec.task == "classification":
            targets = [as_label(v, self.name, i) for i, v in enumerate(labels)]
        else:
            targets = [as_target(v, self.name, i) for i, v in enumerate(labels)]
        if len(targets) != len(rows):
            detail = f"{len(targets)} labels for {len(rows)} rows"
            raise ModelInputError(self.name, self.version, detail)
        if rows and not np.isfinite(matrix).all():
            bad_row, bad_col = (int(i) for i in np.argwhere(~np.isfinite(matrix))[0])
            value = matrix[bad_row, bad_col]
            detail = (
                f"row {bad_row} column {self.columns[bad_col]!r} is {value}: refusing to"
                " learn a non-finite value (it would poison the weights for good)"
            )
            raise ModelInputError(self.name, self.version, detail)
        learn_one = self._model.learn_one
        columns = self.columns
        for row, target in zip(rows, targets, strict=True):
            learn_one(dict(zip(columns, row, strict=True)), target)
        if rows:
            self.version += 1
            self.learned += len(rows)

    def to_bytes(self) -> bytes:
        """A snapshot: JSON with the format, River's version, the spec, the columns, the
        counters and the River model's learned state (``models.river_state``): data only,
        so restoring it runs no code from the bytes, whoever wrote them."""
        state = {
            "format": _SNAPSHOT_FORMAT,
            "river": _river_version(),
            "spec": self.spec.model_dump(mode="json"),
            "columns": list(self.columns),
            "version": self.version,
            "learned": self.learned,
            "model": export_state(self._model),
        }
        return orjson.dumps(state)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        spec: OnlineModelSpec | None = None,
        columns: Sequence[str] | None = None,
    ) -> OnlineLearner:
        """Restore ``to_bytes`` output: our code builds the model from the spec (pass the
        pipeline's ``spec``, and the snapshot must be of it), then fills in its learned
        state from the data, which must fit it exactly (``models.river_state``). Refuses
        anything else (another format, a pickle, damaged or foreign bytes), snapshots
        written with another River version (the state follows River's internals), and,
        when ``spec`` or ``columns`` are given, snapshots of a different model or input
        layout (a spec edited since the checkpoint): the caller decides whether to start
        afresh."""
        if data[:1] == b"\x80":  # a pickle's PROTO opcode: format 1, or planted
            msg = (
                "not a snapshot: the bytes are a pickle (format 1, or planted by someone who"
                f" can write Redis); only JSON snapshots of format {_SNAPSHOT_FORMAT} are"
                " read, pickles are never loaded"
            )
            raise SnapshotError(_UNNAMED, msg)
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            msg = f"not a snapshot (not JSON: {exc})"
            raise SnapshotError(_UNNAMED, msg) from exc
        if not isinstance(state, dict) or state.get("format") != _SNAPSHOT_FORMAT:
            msg = f"not an online learner snapshot of format {_SNAPSHOT_FORMAT}"
            raise SnapshotError(_UNNAMED, msg)
        try:
            saved = OnlineModelSpec.model_validate(state["spec"])
            learner = cls(saved, _strings(state["columns"]))
            version, learned = _count(state["version"]), _count(state["learned"])
            model = state["model"]
        except (KeyError, TypeError, ValueError, OnlineModelError) as exc:
            msg = f"incomplete or invalid snapshot: {exc}"
            raise SnapshotError(_UNNAMED, msg) from exc
        if state.get("river") != _river_version():
            msg = (
                f"snapshot written with river {state.get('river')}, this is river"
                f" {_river_version()}: the learned state follows River's internals, so it is"
                " only restored by the same version"
            )
            raise SnapshotError(saved.name, msg)
        if spec is not None and spec != saved:
            msg = f"snapshot is of {saved.model_dump()}, the spec now asks for {spec.model_dump()}"
            raise SnapshotError(saved.name, msg)
        if columns is not None and tuple(columns) != learner.columns:
            was, now = list(learner.columns), list(columns)
            msg = f"snapshot learned columns {was}, the input is now {now}"
            raise SnapshotError(saved.name, msg)
        try:
            learner._model = restore_state(learner._model, model, "model")
        except StateError as exc:
            msg = f"its model state does not fit the model its spec builds: {exc}"
            raise SnapshotError(saved.name, msg) from exc
        learner.version, learner.learned = version, learned
        return learner

    def _check_shape(self, matrix: npt.NDArray[Any]) -> None:
        if matrix.ndim != 2 or matrix.shape[1] != self.width:
            detail = f"input has shape {matrix.shape}; expected (n, {self.width}): {self.columns}"
            raise ModelInputError(self.name, self.version, detail)

    def _rows(self, matrix: npt.NDArray[Any]) -> list[list[float]]:
        """Rows as lists of Python floats (float32 widens to float64 exactly)."""
        self._check_shape(matrix)
        rows: list[list[float]] = matrix.astype(np.float64, copy=False).tolist()
        return rows

    def __repr__(self) -> str:
        return (
            f"OnlineLearner({self.name!r}, {self.spec.model}, version={self.version},"
            f" learned={self.learned})"
        )


@functools.cache
def _river_version() -> str:
    # Cached: importlib.metadata scans the installed distributions (~0.6 ms), and every
    # checkpoint and reload asks.
    return importlib.metadata.version("river")


def _strings(value: object) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        msg = f"columns must be a list of strings, got {value!r:.80}"
        raise TypeError(msg)
    return value


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        msg = f"a counter must be a non-negative integer, got {value!r:.80}"
        raise TypeError(msg)
    return value


__all__ = [
    "MANY_FROM_ROWS",
    "PRIOR",
    "LabelError",
    "OnlineLearner",
    "OnlineModelError",
    "OnlineModelSpec",
    "SnapshotError",
    "as_label",
    "as_target",
    "as_truth",
    "build_river_model",
]
