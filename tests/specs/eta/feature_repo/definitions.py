"""Feast definitions for the delivery-ETA test pipeline: couriers and zones."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

courier = Entity(name="courier", join_keys=["courier_id"], value_type=ValueType.INT64)

courier_stats = FeatureView(
    name="courier_stats",
    entities=[courier],
    ttl=timedelta(days=7),
    schema=[
        Field(name="avg_speed_kmh", dtype=Float64),
        Field(name="deliveries_7d", dtype=Int64),
        Field(name="late_share_30d", dtype=Float64),
    ],
    source=FileSource(
        name="courier_stats_source",
        path="data/courier_stats.parquet",
        timestamp_field="event_timestamp",
    ),
)
