"""Feast definitions of the card-fraud demo: one entity, one feature view, one service.

Feast imports this file when it parses the repo (``feast apply`` or
``features.store.apply_repo``); it must stay free of relative imports because the Feast CLI
imports it as a top-level module.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

card = Entity(
    name="card",
    join_keys=["card_id"],
    value_type=ValueType.STRING,
    description="A payment card, keyed by its tokenised card id.",
)

# Relative to the repo folder (Feast resolves it against RepoConfig.repo_path), so the
# store works from any working directory. Written by synthetic.write_offline_data.
card_stats_source = FileSource(
    name="card_stats_source",
    path="data/card_stats.parquet",
    timestamp_field="event_timestamp",
    description="Daily per-card aggregate snapshots.",
)

card_stats = FeatureView(
    name="card_stats",
    entities=[card],
    # Snapshots are daily: two days without one means the card's aggregates are stale.
    ttl=timedelta(days=2),
    schema=[
        Field(name="txn_count_24h", dtype=Int64, description="Transactions in the last 24 h."),
        Field(name="avg_amount_30d", dtype=Float32, description="Mean amount over 30 days."),
        Field(name="max_amount_30d", dtype=Float32, description="Largest amount in 30 days."),
        Field(name="distinct_merchants_7d", dtype=Int64, description="Merchants seen in 7 d."),
        Field(name="chargeback_count_90d", dtype=Int64, description="Chargebacks in 90 days."),
    ],
    online=True,
    source=card_stats_source,
    tags={"team": "fraud", "stage": "demo"},
)

card_fraud_v1 = FeatureService(
    name="card_fraud_v1",
    features=[card_stats],
    description="Every card_stats feature: the input of the fraud_* models.",
)
