"""Synthetic card transactions: offline data for Feast and training, and a live generator.

Everything is drawn from one seeded *card population* (``_population``): each card has a
latent activity rate, typical spend, foreign-use rate and risk, and 30 daily snapshots of its
aggregates (the ``card_stats`` features). History and live events are then drawn from the
same population, so the store's features, the labelled history and the live stream agree.

Fraud depends on both sides, as it does in practice: a card's risk of being used by a
fraudster rises with its velocity burst, chargebacks and merchant spread (the features), and
a fraudulent transaction looks different (larger than the card's usual amount, risky
merchant categories, card-not-present, abroad). A model needs the join to do well.

No downloads, no wall-clock randomness: the same seed gives the same values; only the
timestamps follow the ``now`` they are anchored to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

# The event schema's categories; streams/specs/card_fraud.yaml lists the same values.
MERCHANT_CATEGORIES = (
    "grocery",
    "restaurant",
    "fuel",
    "retail",
    "travel",
    "electronics",
    "digital_goods",
    "gambling",
)
CHANNELS = ("chip", "contactless", "swipe", "online")
MIN_AMOUNT, MAX_AMOUNT = 0.5, 20_000.0

# Category/channel mix of genuine vs fraudulent transactions (each row sums to 1).
_LEGIT_CATEGORY_P = np.array([0.30, 0.22, 0.12, 0.20, 0.04, 0.05, 0.05, 0.02])
_FRAUD_CATEGORY_P = np.array([0.12, 0.08, 0.06, 0.18, 0.10, 0.22, 0.18, 0.06])
_LEGIT_CHANNEL_P = np.array([0.38, 0.34, 0.08, 0.20])
_FRAUD_CHANNEL_P = np.array([0.15, 0.12, 0.18, 0.55])
_FRAUD_FOREIGN_P = 0.25

N_DAYS = 30  # daily snapshots per card; the labelled history spans the same days
UNKNOWN_CARD_PREFIX = "card-new-"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def card_id(index: int) -> str:
    """The id of the population's card ``index``; the store knows exactly these."""
    return f"card-{index:06d}"


@dataclass(frozen=True)
class _Population:
    """Latent per-card profile plus daily snapshots, arrays indexed [day, card]."""

    card_ids: list[str]
    activity: FloatArray  # mean transactions per day
    spend: FloatArray  # typical transaction amount
    foreign_rate: FloatArray
    risk: FloatArray  # latent, never a feature
    burst: npt.NDArray[np.bool_]  # [day, card]: the card is being tested/abused that day
    txn_count_24h: IntArray
    avg_amount_30d: npt.NDArray[np.float32]
    max_amount_30d: npt.NDArray[np.float32]
    distinct_merchants_7d: IntArray
    chargeback_count_90d: IntArray

    @property
    def n_cards(self) -> int:
        return len(self.card_ids)


def _population(n_cards: int, seed: int) -> _Population:
    if n_cards < 1:
        msg = f"synthetic: n_cards must be at least 1, got {n_cards}"
        raise ValueError(msg)
    rng = np.random.default_rng([seed, 0])
    z = rng.standard_normal((n_cards, 4))
    activity = np.clip(np.exp(np.log(1.5) + 0.6 * z[:, 0]), 0.05, 30.0)
    spend = np.clip(np.exp(np.log(45.0) + 0.7 * z[:, 1]), 2.0, 2_000.0)
    foreign_rate = _sigmoid(-3.5 + 0.8 * z[:, 2])
    risk = z[:, 3]

    shape = (N_DAYS, n_cards)
    burst = rng.random(shape) < _sigmoid(-4.0 + 1.2 * risk)
    rate_24h = activity * np.where(burst, 4.0, 1.0)
    txn_count_24h = rng.poisson(rate_24h).astype(np.int64)
    diversity = _sigmoid(0.5 + 0.5 * rng.standard_normal(n_cards))
    seen_7d = rng.poisson(7.0 * activity, size=shape)
    distinct = rng.binomial(seen_7d, diversity) + np.where(burst, rng.poisson(3.0, shape), 0)
    avg_amount = spend * np.exp(0.1 * rng.standard_normal(shape))
    spread = np.exp(0.5 + 0.3 * np.log1p(30.0 * activity) + 0.2 * rng.standard_normal(shape))
    chargebacks = rng.poisson(0.03 + 1.2 * _sigmoid(2.0 * risk - 4.0))
    return _Population(
        card_ids=[card_id(i) for i in range(n_cards)],
        activity=activity,
        spend=spend,
        foreign_rate=foreign_rate,
        risk=risk,
        burst=burst,
        txn_count_24h=txn_count_24h,
        avg_amount_30d=avg_amount.astype(np.float32),
        max_amount_30d=(avg_amount * spread).astype(np.float32),
        distinct_merchants_7d=distinct.astype(np.int64),
        chargeback_count_90d=np.broadcast_to(chargebacks, shape).astype(np.int64),
    )


def _sigmoid(x: FloatArray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _fraud_probability(
    txn_count_24h: IntArray,
    distinct_merchants_7d: IntArray,
    chargeback_count_90d: IntArray,
    burst: npt.NDArray[np.bool_],
    risk: FloatArray,
) -> FloatArray:
    """P(a transaction on this card, on this day, is fraud): driven by the card's features."""
    logit = (
        -5.1
        + 0.45 * np.log1p(txn_count_24h)
        + 0.06 * distinct_merchants_7d
        + 0.7 * chargeback_count_90d
        + 1.3 * burst
        + 0.3 * risk
    )
    return np.asarray(_sigmoid(logit), dtype=np.float64)


@dataclass(frozen=True)
class _Transactions:
    """Transaction fields drawn for given cards, columns of equal length."""

    amount: FloatArray
    merchant_category: list[str]
    channel: list[str]
    is_foreign: npt.NDArray[np.bool_]
    is_fraud: npt.NDArray[np.int64]


def _draw_transactions(
    rng: np.random.Generator, spend: FloatArray, foreign_rate: FloatArray, p_fraud: FloatArray
) -> _Transactions:
    """Draw the label first, then fields from the fraud or the genuine distribution."""
    n = len(spend)
    fraud = rng.random(n) < p_fraud
    log_ratio = np.where(
        fraud, 0.7 + 0.9 * rng.standard_normal(n), -0.15 + 0.6 * rng.standard_normal(n)
    )
    amount = np.round(np.clip(spend * np.exp(log_ratio), MIN_AMOUNT, MAX_AMOUNT), 2)
    category = np.where(
        fraud,
        _choose(rng, _FRAUD_CATEGORY_P, n),
        _choose(rng, _LEGIT_CATEGORY_P, n),
    )
    channel = np.where(fraud, _choose(rng, _FRAUD_CHANNEL_P, n), _choose(rng, _LEGIT_CHANNEL_P, n))
    foreign = rng.random(n) < np.where(fraud, _FRAUD_FOREIGN_P, foreign_rate)
    return _Transactions(
        amount=amount,
        merchant_category=[MERCHANT_CATEGORIES[i] for i in category],
        channel=[CHANNELS[i] for i in channel],
        is_foreign=foreign,
        is_fraud=fraud.astype(np.int64),
    )


def _choose(rng: np.random.Generator, p: FloatArray, n: int) -> IntArray:
    return np.searchsorted(np.cumsum(p), rng.random(n) * p.sum()).astype(np.int64)


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _anchor(now: datetime | None) -> datetime:
    """The last snapshot's time: a minute before ``now`` so it is never in the future."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        msg = f"synthetic: 'now' must be timezone-aware, got naive {now.isoformat()}"
        raise ValueError(msg)
    return now.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)


def write_offline_data(
    repo_dir: Path,
    *,
    n_cards: int = 5000,
    n_history: int = 40000,
    seed: int = 0,
    now: datetime | None = None,
) -> None:
    """Write ``data/card_stats.parquet`` and ``data/labelled_transactions.parquet``.

    card_stats holds one snapshot per card per day for the last 30 days, the last a minute
    before ``now`` (default: the current time), so ``materialize`` up to now finds every
    card. The labelled history spans the same 30 days; each transaction's label depends on
    the snapshot in force at its time, which is what Feast's point-in-time join returns.
    """
    population = _population(n_cards, seed)
    anchor = _anchor(now)
    days = [anchor - timedelta(days=N_DAYS - 1 - d) for d in range(N_DAYS)]
    data_dir = Path(repo_dir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)

    stats = pd.DataFrame(
        {
            "card_id": np.tile(population.card_ids, N_DAYS),
            "event_timestamp": pd.DatetimeIndex(np.repeat(days, n_cards)).as_unit("us"),
            "txn_count_24h": population.txn_count_24h.ravel(),
            "avg_amount_30d": population.avg_amount_30d.ravel(),
            "max_amount_30d": population.max_amount_30d.ravel(),
            "distinct_merchants_7d": population.distinct_merchants_7d.ravel(),
            "chargeback_count_90d": population.chargeback_count_90d.ravel(),
        }
    )
    stats.to_parquet(data_dir / "card_stats.parquet", index=False)
    _history(population, days[0], n_history, seed).to_parquet(
        data_dir / "labelled_transactions.parquet", index=False
    )


def _history(population: _Population, start: datetime, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 1])
    # Busy cards transact more; times spread over the snapshot window (the last day's
    # snapshot covers the final minute only, so events end one day after the first).
    cards = _choose(rng, population.activity, n)
    offsets = np.sort(rng.random(n)) * (N_DAYS - 1) * 86_400.0
    day = (offsets // 86_400).astype(np.int64)
    p_fraud = _fraud_probability(
        population.txn_count_24h[day, cards],
        population.distinct_merchants_7d[day, cards],
        population.chargeback_count_90d[day, cards],
        population.burst[day, cards],
        population.risk[cards],
    )
    txns = _draw_transactions(rng, population.spend[cards], population.foreign_rate[cards], p_fraud)
    times = pd.Timestamp(start) + pd.to_timedelta(np.round(offsets * 1e6), unit="us")
    return pd.DataFrame(
        {
            "transaction_id": [_uuid(rng) for _ in range(n)],
            "card_id": [population.card_ids[c] for c in cards],
            "event_time": pd.DatetimeIndex(times).as_unit("us"),
            "amount": txns.amount,
            "merchant_category": txns.merchant_category,
            "channel": txns.channel,
            "is_foreign": txns.is_foreign,
            "is_fraud": txns.is_fraud,
        }
    )


class CardTransactions:
    """Live transaction events for the producer, deterministic by ``seed``.

    Cards and their aggregates come from the population of ``population_seed`` and
    ``n_cards``, which must match ``write_offline_data``'s ``seed``/``n_cards`` for the
    stream to agree with the store (the defaults do). Labels follow each card's latest
    snapshot, the values the online store serves. A share ``unknown_card_rate`` of events
    comes from cards the store has never seen (risky: brand-new cards).
    """

    def __init__(
        self,
        seed: int = 0,
        unknown_card_rate: float = 0.01,
        *,
        n_cards: int = 5000,
        population_seed: int = 0,
    ) -> None:
        if not 0.0 <= unknown_card_rate <= 1.0:
            msg = f"CardTransactions: unknown_card_rate {unknown_card_rate} is not in [0, 1]"
            raise ValueError(msg)
        self._rng = np.random.default_rng([seed, 2])
        self._unknown_rate = unknown_card_rate
        pop = _population(n_cards, population_seed)
        self._ids = pop.card_ids
        self._cdf = np.cumsum(pop.activity) / pop.activity.sum()
        self._spend = pop.spend
        self._foreign = pop.foreign_rate
        last = N_DAYS - 1
        self._p_fraud = _fraud_probability(
            pop.txn_count_24h[last],
            pop.distinct_merchants_7d[last],
            pop.chargeback_count_90d[last],
            pop.burst[last],
            pop.risk,
        )
        # New cards: median spend, no history, an elevated fraud rate.
        self._unknown = (float(np.median(pop.spend)), 0.05, 0.08)

    def next_event(self, now: datetime) -> dict[str, Any]:
        """One JSON-ready transaction at time ``now`` (tz-aware), without its label."""
        return self.next_labelled(now)[0]

    def next_labelled(self, now: datetime) -> tuple[dict[str, Any], int]:
        """One transaction and its ``is_fraud`` label, for delayed-label simulations."""
        if now.tzinfo is None:
            msg = f"CardTransactions: 'now' must be timezone-aware, got {now.isoformat()}"
            raise ValueError(msg)
        rng = self._rng
        if rng.random() < self._unknown_rate:
            key = f"{UNKNOWN_CARD_PREFIX}{rng.integers(0, 10**8):08d}"
            spend, foreign, p_fraud = self._unknown
        else:
            index = min(int(np.searchsorted(self._cdf, rng.random())), len(self._ids) - 1)
            key = self._ids[index]
            spend = self._spend[index]
            foreign = self._foreign[index]
            p_fraud = self._p_fraud[index]
        txn = _draw_transactions(rng, np.array([spend]), np.array([foreign]), np.array([p_fraud]))
        event = {
            "transaction_id": _uuid(rng),
            "card_id": key,
            "event_time": now.astimezone(UTC).isoformat(),
            "amount": float(txn.amount[0]),
            "merchant_category": txn.merchant_category[0],
            "channel": txn.channel[0],
            "is_foreign": bool(txn.is_foreign[0]),
        }
        return event, int(txn.is_fraud[0])
