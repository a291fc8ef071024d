"""Spec-driven training: labelled events + point-in-time features -> registered ONNX models.

The training matrix is built by the same ``InputLayout`` the worker uses, and every model is
scored on the holdout through the serving ``OnnxScorer`` and compared with scikit-learn
before anything is registered: a model whose ONNX form disagrees never reaches the registry.
Training-only (imports scikit-learn through ``models.estimators``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import pandas as pd
import skl2onnx
import sklearn
from sklearn.model_selection import train_test_split

from models.errors import ModelError, TrainingError
from models.estimators import (
    PARITY_TOLERANCE,
    TASK_OF,
    make_estimator,
    offline_metrics,
    parity_gap,
    reference_scores,
    to_onnx_bytes,
)
from models.inputs import InputLayout
from models.manifest import Label, ManifestFields, Task, TrainingData
from models.registry import ModelRegistry, ModelVersion
from models.scorer import OnnxScorer
from streams.spec import PipelineSpec, TrainingSpec, TrainModel, feature_column

log = logging.getLogger(__name__)
EVENT_TIMESTAMP = "event_timestamp"  # the column name Feast's point-in-time join requires


class _RetrievalJob(Protocol):
    def to_df(self) -> pd.DataFrame: ...


class HistoricalStore(Protocol):
    """The one Feast call training needs (``feast.FeatureStore`` satisfies it)."""

    def get_historical_features(
        self, entity_df: pd.DataFrame, features: list[str], full_feature_names: bool
    ) -> _RetrievalJob: ...


def load_training_frame(spec: PipelineSpec, store: HistoricalStore) -> pd.DataFrame:
    """The labelled events joined with each feature's value *as of the event's time*.

    Feast's point-in-time join only sees feature rows older than the event, so no future
    value leaks into training. Missing values take ``spec.features.defaults``, as serving
    does. Rows come back sorted by time then event id: Feast does not keep input order, and
    a seeded split is only reproducible on a fixed order.
    """
    training = _training(spec)
    try:
        data = pd.read_parquet(training.dataset)
    except (OSError, ValueError) as exc:
        msg = f"cannot read training dataset {training.dataset}: {exc}"
        raise TrainingError(spec.name, msg) from exc
    time_field = spec.event.time_field or EVENT_TIMESTAMP
    needed = [spec.event.id_field, spec.entity.field, time_field, training.label]
    _require_columns(spec.name, data, needed, f"dataset {training.dataset}")
    entity_df = data.copy()
    entity_df[spec.entity.join_key] = data[spec.entity.field]
    entity_df[EVENT_TIMESTAMP] = _timestamps(spec.name, data[time_field])
    job = store.get_historical_features(
        entity_df=entity_df, features=list(spec.features.refs), full_feature_names=True
    )
    frame = job.to_df()
    _require_columns(spec.name, frame, _feature_columns(spec), "Feast's historical features")
    for ref, default in spec.features.defaults.items():
        column = feature_column(ref)
        missing = int(frame[column].isna().sum())
        if missing:
            log.info(
                "training %s: %d rows lack %s; using default %s", spec.name, missing, ref, default
            )
        frame[column] = frame[column].astype(np.float64).fillna(default)
    order = [EVENT_TIMESTAMP, spec.event.id_field]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def train_models(
    spec: PipelineSpec,
    frame: pd.DataFrame,
    registry: ModelRegistry,
    *,
    seed: int = 0,
    holdout_fraction: float = 0.2,
) -> list[ModelVersion]:
    """Fit, convert, verify and register every ``spec.training.models`` entry.

    All models are verified before the first is registered, so a failure leaves the
    registry unchanged. Raises TrainingError on bad data, bad params or ONNX disagreement.
    """
    training = _training(spec)
    for entry in training.models:
        if TASK_OF[entry.estimator] != training.task:
            msg = f"estimator {entry.estimator} is not a {training.task} estimator"
            raise TrainingError(entry.name, msg)
    layout = InputLayout(spec)
    matrix, labels, classes = _vectorize(spec, training, layout, frame)
    stratify = labels if training.task == "classification" else None
    try:
        train, hold = train_test_split(
            np.arange(len(frame)), test_size=holdout_fraction, random_state=seed, stratify=stratify
        )
    except ValueError as exc:  # e.g. too few rows of a class to stratify
        raise TrainingError(spec.name, f"cannot split {len(frame)} rows: {exc}") from exc
    data_ref = TrainingData(
        path=str(training.dataset),
        sha256=_file_sha256(spec.name, training),
        rows=len(frame),
        train_rows=len(train),
        holdout_rows=len(hold),
    )
    split = _Split(matrix, labels, train, hold)
    candidates = [
        _fit_and_verify(entry, training.task, layout, split, seed) for entry in training.models
    ]
    registered = []
    for candidate in candidates:
        fields = ManifestFields(
            training_data=data_ref,
            input_columns=tuple(layout.columns),
            task=training.task,
            metrics=candidate.metrics,
            estimator=candidate.estimator,
            params=candidate.params,
            classes=classes,
            seed=seed,
            pipeline=spec.name,
            feature_refs=spec.features.refs,
            libraries=_LIBRARIES,
        )
        version = registry.register(candidate.name, candidate.onnx_bytes, fields)
        log.info("registered %s v%d: %s", version.name, version.version, candidate.metrics)
        registered.append(version)
    return registered


@dataclass(frozen=True)
class _Split:
    matrix: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float64]
    train: npt.NDArray[np.int64]
    hold: npt.NDArray[np.int64]


@dataclass(frozen=True)
class _Candidate:
    name: str
    estimator: str
    params: dict[str, Any]
    onnx_bytes: bytes
    metrics: dict[str, float]


def _fit_and_verify(
    entry: TrainModel, task: Task, layout: InputLayout, split: _Split, seed: int
) -> _Candidate:
    name = entry.name
    estimator, params = make_estimator(entry, seed)
    holdout = split.matrix[split.hold]
    try:
        estimator.fit(split.matrix[split.train], split.labels[split.train])
        onnx_bytes = to_onnx_bytes(estimator, layout.width, task)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise TrainingError(name, f"{entry.estimator} failed to fit or convert: {exc}") from exc
    try:
        scorer = OnnxScorer(
            onnx_bytes, name=name, version=0, input_columns=layout.columns, task=task
        )
        scores = scorer.score(holdout)
    except ModelError as exc:
        raise TrainingError(name, f"the converted model cannot be served: {exc}") from exc
    gap = parity_gap(scores, reference_scores(estimator, holdout, task), task)
    if not gap <= PARITY_TOLERANCE:  # `not <=` also catches NaN
        msg = (
            f"ONNX scores differ from scikit-learn's by {gap:.3g} on the holdout"
            f" (tolerance {PARITY_TOLERANCE}); not registered"
        )
        raise TrainingError(name, msg)
    # Metrics from the ONNX scores: they describe the artifact that will serve.
    metrics = offline_metrics(split.labels[split.hold], scores, task)
    return _Candidate(name, entry.estimator, params, onnx_bytes, metrics)


def _vectorize(
    spec: PipelineSpec, training: TrainingSpec, layout: InputLayout, frame: pd.DataFrame
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], tuple[Label, ...] | None]:
    used = [c.event for c in spec.model_input if c.event is not None]
    feature_columns = _feature_columns(spec)
    _require_columns(spec.name, frame, [*used, *feature_columns, training.label], "frame")
    fields = [name for name in spec.event.fields if name in frame.columns]
    # Serving sees an absent field as None, never NaN: keep training the same.
    events = frame[fields].astype(object)
    records = events.where(events.notna(), None).to_dict("records")
    try:
        matrix = layout.build(records, frame[feature_columns].to_numpy(dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise TrainingError(spec.name, f"cannot build the input matrix: {exc}") from exc
    finite = [bool(ok) for ok in np.isfinite(matrix).all(axis=0)]
    bad = [c for c, ok in zip(layout.columns, finite, strict=True) if not ok]
    if bad:
        raise TrainingError(spec.name, f"input columns {bad} have missing or infinite values")
    label = frame[training.label]
    if label.isna().any():
        msg = f"{int(label.isna().sum())} rows have no label {training.label!r}"
        raise TrainingError(spec.name, msg)
    if training.task == "regression":
        return matrix, label.to_numpy(dtype=np.float64), None
    values = sorted(label.unique().tolist())
    if len(values) != 2:
        msg = f"label {training.label!r} has values {values[:10]}; classification needs 2"
        raise TrainingError(spec.name, msg)
    # The larger label (1, True, "yes" > "no") is the positive class the scorer reports.
    positive = (label == values[1]).to_numpy(dtype=np.float64)
    return matrix, positive, (values[0], values[1])


def _training(spec: PipelineSpec) -> TrainingSpec:
    if spec.training is None:
        raise TrainingError(spec.name, "the spec has no 'training' section")
    return spec.training


def _feature_columns(spec: PipelineSpec) -> list[str]:
    return [feature_column(ref) for ref in spec.features.refs]


def _require_columns(name: str, frame: pd.DataFrame, columns: list[str], where: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise TrainingError(name, f"{where} lacks columns {missing}")


def _timestamps(name: str, column: pd.Series) -> pd.Series:
    """Event times as UTC timestamps; the spec allows ISO 8601 strings or epoch ms."""
    try:
        if pd.api.types.is_numeric_dtype(column):
            return pd.to_datetime(column, unit="ms", utc=True)
        if pd.api.types.is_datetime64_any_dtype(column):
            return pd.to_datetime(column, utc=True)
        return pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise TrainingError(name, f"cannot read event times of {column.name!r}: {exc}") from exc


def _file_sha256(name: str, training: TrainingSpec) -> str:
    try:
        with open(training.dataset, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        msg = f"cannot hash training dataset {training.dataset}: {exc.strerror}"
        raise TrainingError(name, msg) from exc


_LIBRARIES = {
    "scikit-learn": sklearn.__version__,
    "skl2onnx": skl2onnx.__version__,
    "onnx": onnx.__version__,
    "onnxruntime": onnxruntime.__version__,
}
