"""Feast definitions for the diabetes test pipeline: one constant per clinic (unused by the
models: the spec needs a feature repo, the models see scikit-learn's features only)."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Int64

clinic = Entity(name="clinic", join_keys=["clinic_id"], value_type=ValueType.INT64)

clinic_stats = FeatureView(
    name="clinic_stats",
    entities=[clinic],
    ttl=timedelta(days=7),
    schema=[Field(name="referrals", dtype=Int64)],
    source=FileSource(
        name="clinic_stats_source",
        path="data/clinic_stats.parquet",
        timestamp_field="event_timestamp",
    ),
)
