"""Synthetic data for the delivery-ETA test pipeline (offline features, history, live)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

N_COURIERS = 300
VEHICLES = ("bike", "scooter", "car")
VEHICLE_FACTOR = {"bike": 1.3, "scooter": 1.0, "car": 0.9}


def _couriers(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "courier_id": np.arange(1, N_COURIERS + 1, dtype=np.int64),
            "avg_speed_kmh": rng.uniform(12, 35, N_COURIERS),
            "deliveries_7d": rng.integers(0, 120, N_COURIERS),
            "late_share_30d": rng.beta(2, 12, N_COURIERS),
        }
    )


def minutes(distance_km: float, items: int, vehicle: str, speed: float, late: float) -> float:
    return 60 * distance_km / speed * VEHICLE_FACTOR[vehicle] + 1.5 * items + 30 * late + 4


def write_offline_data(repo_dir: Path, seed: int = 0, n_history: int = 4000) -> None:
    data = repo_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    couriers = _couriers(seed)
    now = datetime.now(UTC)
    couriers["event_timestamp"] = now - timedelta(hours=1)
    couriers.to_parquet(data / "courier_stats.parquet", index=False)

    rng = np.random.default_rng(seed + 1)
    rows = couriers.sample(n_history, replace=True, random_state=seed).reset_index(drop=True)
    distance = rng.uniform(0.3, 12, n_history)
    items = rng.integers(1, 9, n_history)
    vehicle = rng.choice(VEHICLES, n_history)
    target = [
        minutes(d, int(i), str(v), s, late) + rng.normal(0, 2)
        for d, i, v, s, late in zip(
            distance, items, vehicle, rows["avg_speed_kmh"], rows["late_share_30d"], strict=True
        )
    ]
    pd.DataFrame(
        {
            "order_id": [f"o-{i}" for i in range(n_history)],
            "courier_id": rows["courier_id"].astype(np.int64),
            "placed_at": now - timedelta(minutes=30),
            "distance_km": distance,
            "items": items,
            "vehicle": vehicle,
            "minutes": target,
        }
    ).to_parquet(data / "deliveries.parquet", index=False)


class Orders:
    """Live orders; courier ids above N_COURIERS are unknown to the store."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self._n = 0

    def next_event(self, now: datetime) -> dict[str, Any]:
        r = self._random
        self._n += 1
        return {
            "order_id": f"live-{self._n}",
            "courier_id": r.randint(1, N_COURIERS + 10),
            "placed_at": now.isoformat(),
            "distance_km": round(r.uniform(0.3, 12), 3),
            "items": r.randint(1, 8),
            "vehicle": r.choice(VEHICLES),
        }
