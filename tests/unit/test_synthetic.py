"""The card-fraud synthetic data: deterministic, valid against the demo spec, learnable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from features.card_fraud.synthetic import (
    UNKNOWN_CARD_PREFIX,
    CardTransactions,
    card_id,
    write_offline_data,
)
from streams.spec import FieldSpec, PipelineSpec, load_spec

SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
N_CARDS = 400


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(SPEC)


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    repo = tmp_path_factory.mktemp("card_fraud")
    write_offline_data(repo, n_cards=N_CARDS, n_history=8000, seed=0, now=NOW)
    stats = pd.read_parquet(repo / "data" / "card_stats.parquet")
    history = pd.read_parquet(repo / "data" / "labelled_transactions.parquet")
    return stats, history


def events(seed: int, n: int = 200, **kwargs: Any) -> list[dict[str, Any]]:
    generator = CardTransactions(seed=seed, n_cards=N_CARDS, **kwargs)
    return [generator.next_event(NOW + timedelta(milliseconds=i)) for i in range(n)]


def check_field(name: str, field: FieldSpec, value: Any) -> None:
    """The demo spec's schema, checked independently of the stream's validator."""
    checks = {
        "string": lambda v: isinstance(v, str) and v != "",
        "float": lambda v: isinstance(v, float),
        "bool": lambda v: isinstance(v, bool),
        "category": lambda v: v in (field.values or ()),
        "timestamp": lambda v: datetime.fromisoformat(v).utcoffset() == timedelta(0),
    }
    assert checks[field.type](value), f"{name}={value!r} is not a valid {field.type}"
    if field.min is not None:
        assert value >= field.min, f"{name}={value} is below {field.min}"
    if field.max is not None:
        assert value <= field.max, f"{name}={value} is above {field.max}"


def test_same_seed_same_events_other_seed_other_events() -> None:
    assert events(seed=7) == events(seed=7)
    assert events(seed=7) != events(seed=8)


def test_live_events_satisfy_the_demo_schema(spec: PipelineSpec) -> None:
    fields = spec.event.fields
    for event in events(seed=1, n=500, unknown_card_rate=0.1):
        assert set(event) <= set(fields), f"undeclared fields {set(event) - set(fields)}"
        for name, field in fields.items():
            if field.required:
                assert name in event, f"missing required {name!r}"
            if name in event:
                check_field(name, field, event[name])


def test_history_satisfies_the_demo_schema(
    spec: PipelineSpec, offline: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, history = offline
    fields = spec.event.fields
    assert set(fields) <= set(history.columns)
    assert history["amount"].between(fields["amount"].min, fields["amount"].max).all()
    for name in ("merchant_category", "channel"):
        assert set(history[name]) <= set(fields[name].values or ())
    assert history["transaction_id"].is_unique
    assert str(history["event_time"].dt.tz) == "UTC" and history["is_foreign"].dtype == bool


def test_unknown_cards_come_at_the_requested_rate() -> None:
    keys = [e["card_id"] for e in events(seed=2, n=2000, unknown_card_rate=0.1)]
    unknown = [k for k in keys if k.startswith(UNKNOWN_CARD_PREFIX)]
    known = set(keys) - set(unknown)

    assert 0.07 < len(unknown) / len(keys) < 0.13
    assert known <= {card_id(i) for i in range(N_CARDS)}


def test_live_fraud_rate_is_realistic() -> None:
    generator = CardTransactions(seed=3, n_cards=N_CARDS)
    labels = [generator.next_labelled(NOW)[1] for _ in range(4000)]
    assert 0.01 < np.mean(labels) < 0.08


def test_offline_data_is_deterministic(tmp_path: Path) -> None:
    frames = []
    for name in ("a", "b"):
        write_offline_data(tmp_path / name, n_cards=50, n_history=300, seed=4, now=NOW)
        frames.append(pd.read_parquet(tmp_path / name / "data" / "labelled_transactions.parquet"))
    pd.testing.assert_frame_equal(*frames)


def test_offline_data_covers_every_card_up_to_now(
    offline: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    stats, history = offline
    latest = stats.groupby("card_id")["event_timestamp"].max()

    assert len(latest) == N_CARDS and str(stats["event_timestamp"].dt.tz) == "UTC"
    assert (latest <= NOW).all() and (latest > NOW - timedelta(hours=1)).all()
    assert set(history["card_id"]) <= set(latest.index)
    assert history["event_time"].max() <= NOW


def test_fraud_rate_in_range_and_learnable_from_the_join(
    offline: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    stats, history = offline
    assert 0.02 <= history["is_fraud"].mean() <= 0.05
    assert set(history["is_fraud"].unique()) == {0, 1}

    # The point-in-time join training does: the latest snapshot at or before each event.
    joined = pd.merge_asof(
        history.sort_values("event_time"),
        stats.sort_values("event_timestamp"),
        left_on="event_time",
        right_on="event_timestamp",
        by="card_id",
    )
    event_x = pd.get_dummies(joined[["merchant_category", "channel"]], dtype=float).assign(
        log_amount=np.log(joined["amount"]), is_foreign=joined["is_foreign"].astype(float)
    )
    feature_x = np.log1p(joined[list(stats.columns[2:])].astype(float))
    y = joined["is_fraud"].to_numpy()

    def auc(x: pd.DataFrame) -> float:
        train, test = slice(0, 5000), slice(5000, None)
        model = LogisticRegression(max_iter=1000).fit(x[train], y[train])
        return float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))

    both = auc(pd.concat([event_x, feature_x], axis=1))
    assert both > 0.85
    # Each side carries signal of its own: fraud depends on the event AND the card.
    assert both > auc(event_x) + 0.01 and both > auc(feature_x) + 0.05
