"""scikit-learn's bundled diabetes dataset (442 patients, ten features, the disease's
progression a year later as a number; no download) as events and delayed labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

N_CLINICS = 5


def rows() -> list[tuple[dict[str, float], float]]:
    """The 442 (features, progression) pairs in the dataset's natural order."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=True)
    names = list(data.feature_names)
    return [
        (dict(zip(names, map(float, x), strict=True)), float(y))
        for x, y in zip(data.data, data.target, strict=True)
    ]


def event(i: int, features: dict[str, float], now: datetime) -> dict[str, Any]:
    return {
        "patient_id": f"patient-{i}",
        "clinic_id": i % N_CLINICS,
        "seen_at": now.isoformat(),
        **features,
    }


def write_offline_data(repo_dir: Path) -> None:
    data = repo_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    pd.DataFrame(
        {
            "clinic_id": range(N_CLINICS),
            "referrals": [0] * N_CLINICS,
            "event_timestamp": now - timedelta(hours=1),
        }
    ).to_parquet(data / "clinic_stats.parquet", index=False)
    # The registry models train on the dataset itself: what they score is not under test.
    frame = pd.DataFrame([event(i, x, now) for i, (x, _) in enumerate(rows())])
    frame["seen_at"] = now - timedelta(minutes=30)
    frame["progression"] = [y for _, y in rows()]
    frame.to_parquet(data / "patients.parquet", index=False)


class Patients:
    """The dataset's patients, in order, then again from the start."""

    def __init__(self, seed: int = 0) -> None:
        self._rows = rows()
        self._n = 0

    def next_event(self, now: datetime) -> dict[str, Any]:
        i = self._n
        self._n += 1
        return event(i, self._rows[i % len(self._rows)][0], now)
