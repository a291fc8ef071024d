"""Feast definitions for the phishing test pipeline: one constant per site (unused by the
models: the spec needs a feature repo, the models see River's own features only)."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Int64

site = Entity(name="site", join_keys=["site_id"], value_type=ValueType.INT64)

site_stats = FeatureView(
    name="site_stats",
    entities=[site],
    ttl=timedelta(days=7),
    schema=[Field(name="reports", dtype=Int64)],
    source=FileSource(
        name="site_stats_source", path="data/site_stats.parquet", timestamp_field="event_timestamp"
    ),
)
