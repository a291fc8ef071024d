"""Spec-driven training: labelled events + point-in-time features -> registered ONNX models.

The training matrix is built by the same ``InputLayout`` the worker uses, and every model is
scored on the holdout through the serving ``OnnxScorer`` and compared with scikit-learn
before anything is registered: a model whose ONNX form disagrees never reaches the registry.
Each version is registered with its reference profile (``models/profile.py``): the training
rows' distribution per input column and the model's held-out score distribution, what the
scoring worker measures drift against.
Training-only (imports scikit-learn through ``models.estimators``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

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
from models.manifest import Label, ManifestFields, StreamLineage, Task, TrainingData
from models.profile import ColumnGroup, ReferenceProfile, build_profile, column_groups
from models.registry import ModelRegistry, ModelVersion
from models.scorer import OnnxScorer
from models.training_frame import (
    HistoricalStore,
    feature_columns,
    load_training_frame,
    require_columns,
    training_section,
)
from streams.spec import PipelineSpec, TrainingSpec, TrainModel

__all__ = ["HistoricalStore", "load_training_frame", "train_models", "train_on_vectors"]
log = logging.getLogger(__name__)


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
    training = training_section(spec)
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
    groups = column_groups(spec)
    candidates = [
        _fit_and_verify(entry, training.task, layout, split, seed, groups)
        for entry in training.models
    ]
    return [
        _register(registry, spec, layout, candidate, data_ref, classes, seed)
        for candidate in candidates
    ]


def train_on_vectors(
    spec: PipelineSpec,
    name: str,
    matrix: npt.NDArray[np.float32],
    labels: npt.NDArray[np.float64],
    registry: ModelRegistry,
    *,
    holdout_rows: int,
    data: TrainingData,
    lineage: StreamLineage,
    seed: int = 0,
) -> ModelVersion:
    """Fit ``training.models`` entry ``name`` on served input vectors (rows in time order),
    verify and register it as ``train_models`` does; the last ``holdout_rows`` rows are
    the held-out tail its metrics (also recorded in ``lineage``) are measured on.

    Classification labels are 0/1 (as the label join makes them). Raises TrainingError."""
    training = training_section(spec)
    entries = [entry for entry in training.models if entry.name == name]
    if not entries:
        known = [entry.name for entry in training.models]
        msg = f"training.models has no entry named {name!r} (entries: {known})"
        raise TrainingError(spec.name, msg)
    layout = InputLayout(spec)
    if matrix.shape[1:] != (layout.width,):
        msg = f"vectors have {matrix.shape[1:]} columns, the spec's layout {layout.width}"
        raise TrainingError(name, msg)
    rows = len(labels)
    train, hold = np.arange(rows - holdout_rows), np.arange(rows - holdout_rows, rows)
    classes: tuple[Label, ...] | None = None
    if training.task == "classification":
        for part, where in ((labels, "rows"), (labels[train], "training rows")):
            if len(np.unique(part)) != 2:
                found = sorted({int(v) for v in np.unique(part)})
                msg = f"the {where} have one class only ({found}): a classifier needs both"
                raise TrainingError(name, msg)
        classes = (0, 1)
    split = _Split(matrix, labels, train, hold)
    candidate = _fit_and_verify(entries[0], training.task, layout, split, seed, column_groups(spec))
    fields_lineage = lineage.model_copy(update={"metrics": candidate.metrics})
    return _register(registry, spec, layout, candidate, data, classes, seed, lineage=fields_lineage)


def _register(
    registry: ModelRegistry,
    spec: PipelineSpec,
    layout: InputLayout,
    candidate: _Candidate,
    data_ref: TrainingData,
    classes: tuple[Label, ...] | None,
    seed: int,
    lineage: StreamLineage | None = None,
) -> ModelVersion:
    fields = ManifestFields(
        training_data=data_ref,
        input_columns=tuple(layout.columns),
        task=spec.task,
        metrics=candidate.metrics,
        estimator=candidate.estimator,
        params=candidate.params,
        classes=classes,
        seed=seed,
        pipeline=spec.name,
        feature_refs=spec.features.refs,
        libraries=_LIBRARIES,
        lineage=lineage,
    )
    version = registry.register(
        candidate.name, candidate.onnx_bytes, fields, profile=candidate.profile
    )
    log.info("registered %s v%d: %s", version.name, version.version, candidate.metrics)
    return version


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
    profile: ReferenceProfile


def _fit_and_verify(
    entry: TrainModel,
    task: Task,
    layout: InputLayout,
    split: _Split,
    seed: int,
    groups: list[ColumnGroup],
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
    profile = build_profile(layout.columns, groups, split.matrix[split.train], scores)
    return _Candidate(name, entry.estimator, params, onnx_bytes, metrics, profile)


def _vectorize(
    spec: PipelineSpec, training: TrainingSpec, layout: InputLayout, frame: pd.DataFrame
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], tuple[Label, ...] | None]:
    used = [c.event for c in spec.model_input if c.event is not None]
    features = feature_columns(spec)
    require_columns(spec.name, frame, [*used, *features, training.label], "frame")
    fields = [name for name in spec.event.fields if name in frame.columns]
    # Serving sees an absent field as None, never NaN: keep training the same.
    events = frame[fields].astype(object)
    records = events.where(events.notna(), None).to_dict("records")
    try:
        matrix = layout.build(records, frame[features].to_numpy(dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise TrainingError(spec.name, f"cannot build the input matrix: {exc}") from exc
    bad = [c for i, c in enumerate(layout.columns) if not np.isfinite(matrix[:, i]).all()]
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
