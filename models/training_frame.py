"""Training data: the dataset's labelled events joined with point-in-time Feast features.

pandas only (no scikit-learn): a notebook or a data check can build the same frame that
training fits on.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import pandas as pd

from models.errors import TrainingError
from streams.spec import PipelineSpec, TrainingSpec, feature_column

log = logging.getLogger(__name__)
EVENT_TIMESTAMP = "event_timestamp"  # the column name Feast's point-in-time join requires
_JOINED = "_streamscore_joined"


class _RetrievalJob(Protocol):
    def to_df(self) -> pd.DataFrame: ...


class HistoricalStore(Protocol):
    """The one Feast call training needs (``feast.FeatureStore`` satisfies it)."""

    def get_historical_features(
        self, entity_df: pd.DataFrame, features: list[str], full_feature_names: bool
    ) -> _RetrievalJob: ...


def load_training_frame(spec: PipelineSpec, store: HistoricalStore) -> pd.DataFrame:
    """The labelled events, in dataset order, with each feature's value *as of* the event.

    Feast's point-in-time join only sees feature rows older than the event, so no future
    value leaks into training. Missing values take ``spec.features.defaults``, as serving
    does. Feast is asked once per distinct (entity key, time) and the answer merged back:
    its file offline store silently collapses entity rows that share both
    (feast-dev/feast#6787), which would drop events, labels included.
    """
    training = training_section(spec)
    try:
        data = pd.read_parquet(training.dataset)
    except (OSError, ValueError) as exc:
        msg = f"cannot read training dataset {training.dataset}: {exc}"
        raise TrainingError(spec.name, msg) from exc
    time_field = spec.event.time_field or EVENT_TIMESTAMP
    needed = [spec.event.id_field, spec.entity.field, time_field, training.label]
    require_columns(spec.name, data, needed, f"dataset {training.dataset}")
    keys = [spec.entity.join_key, EVENT_TIMESTAMP]
    columns = feature_columns(spec)
    frame = data.drop(columns=columns, errors="ignore").assign(
        **{keys[0]: data[spec.entity.field], keys[1]: _timestamps(spec.name, data[time_field])}
    )
    entity_df = frame[keys].drop_duplicates(ignore_index=True)
    job = store.get_historical_features(
        entity_df=entity_df, features=list(spec.features.refs), full_feature_names=True
    )
    found = job.to_df()
    require_columns(spec.name, found, [*keys, *columns], "Feast's historical features")
    found = found[[*keys, *columns]].astype({keys[0]: entity_df[keys[0]].dtype})
    found[EVENT_TIMESTAMP] = pd.to_datetime(found[EVENT_TIMESTAMP], utc=True)
    found = found.astype({EVENT_TIMESTAMP: entity_df[EVENT_TIMESTAMP].dtype})
    if found.duplicated(keys).any():
        raise TrainingError(spec.name, "Feast returned one (key, time) row more than once")
    frame = frame.merge(found, on=keys, how="left", indicator=_JOINED)
    if lost := int((frame.pop(_JOINED) != "both").sum()):
        msg = f"Feast returned no row for {lost} of {len(frame)} events (check key types)"
        raise TrainingError(spec.name, msg)
    for ref, default in spec.features.defaults.items():
        column = feature_column(ref)
        if missing := int(frame[column].isna().sum()):
            log.info("training %s: %d rows lack %s; default %s", spec.name, missing, ref, default)
        frame[column] = frame[column].astype(np.float64).fillna(default)
    return frame


def training_section(spec: PipelineSpec) -> TrainingSpec:
    if spec.training is None:
        raise TrainingError(spec.name, "the spec has no 'training' section")
    return spec.training


def feature_columns(spec: PipelineSpec) -> list[str]:
    return [feature_column(ref) for ref in spec.features.refs]


def require_columns(name: str, frame: pd.DataFrame, columns: list[str], where: str) -> None:
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
