"""River's Phishing dataset (bundled in the river wheel) as events and delayed labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

N_SITES = 10


def rows() -> list[tuple[dict[str, float], bool]]:
    """The 1,250 (features, label) pairs in the dataset's natural order."""
    from river import datasets

    return [(dict(x), bool(y)) for x, y in datasets.Phishing()]


def event(i: int, features: dict[str, float], now: datetime) -> dict[str, Any]:
    return {
        "page_id": f"page-{i}",
        "site_id": i % N_SITES,
        "seen_at": now.isoformat(),
        **{name: float(value) for name, value in features.items()},
    }


def write_offline_data(repo_dir: Path) -> None:
    data = repo_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    pd.DataFrame(
        {
            "site_id": range(N_SITES),
            "reports": [0] * N_SITES,
            "event_timestamp": now - timedelta(hours=1),
        }
    ).to_parquet(data / "site_stats.parquet", index=False)
    # The primary trains on the dataset itself: what it scores is not under test here.
    events = [event(i, x, now - timedelta(minutes=30)) for i, (x, _) in enumerate(rows())]
    frame = pd.DataFrame(events)
    frame["seen_at"] = now - timedelta(minutes=30)
    frame["is_phishing"] = [int(y) for _, y in rows()]
    frame.to_parquet(data / "pages.parquet", index=False)


class Pages:
    """The dataset's pages, in order, then again from the start."""

    def __init__(self, seed: int = 0) -> None:
        self._rows = rows()
        self._n = 0

    def next_event(self, now: datetime) -> dict[str, Any]:
        i = self._n
        self._n += 1
        return event(i, self._rows[i % len(self._rows)][0], now)
