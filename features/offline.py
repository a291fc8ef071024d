"""The skew check's offline read: (entity key, event time) pairs -> each feature ref's
point-in-time value from Feast's offline store, as ``streamscore train`` reads them.

One ``get_historical_features`` call per batch of pairs. It is slow and blocking (the file
offline store scans its source: 0.1-0.4 s for the demo's 150,000 rows and up to 100 keys,
more for more keys or on a busy machine; README "Online/offline skew"), so callers run it
in a thread (``streams.learning.skew_check``); the store itself is opened on the first
read, in that thread too (~0.5 s).

Feast's file offline store collapses entity rows that share both key and time
(feast-dev/feast#6787) and returns rows in no particular order, so each distinct pair is
asked once, under a row number of its own, and the answers are mapped back by it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from feast import FeatureStore, ValueType

from features.errors import FeatureStoreError
from streams.spec import PipelineSpec, feature_column

STAGE = "features.offline"
EVENT_TIMESTAMP = "event_timestamp"  # the column name Feast's point-in-time join requires
_ROW = "_streamscore_row"


class PointInTimeReader:
    """``read(keys, times)``: the value of every ``spec.features.refs`` as of each event
    time (NaN where the offline store has none within the view's ttl). Thread-safe: reads
    run one at a time."""

    def __init__(self, open_store: Callable[[], FeatureStore], spec: PipelineSpec) -> None:
        self._open_store = open_store
        self._store: FeatureStore | None = None
        self.refs: tuple[str, ...] = spec.features.refs
        self._join_key = spec.entity.join_key
        self._columns = [feature_column(ref) for ref in self.refs]
        self._normalise: Callable[[Any], Any] = str
        self._lock = threading.Lock()

    def read(self, keys: Sequence[str | int], times: Sequence[float]) -> npt.NDArray[np.float64]:
        """Rows in the order of ``keys``; ``times`` in epoch seconds."""
        with self._lock:
            store = self._opened()
            try:
                pairs = pd.DataFrame(
                    {
                        self._join_key: [self._normalise(k) for k in keys],
                        EVENT_TIMESTAMP: pd.to_datetime(np.asarray(times), unit="s", utc=True),
                    }
                )
                unique = pairs.drop_duplicates(ignore_index=True)
                inverse = pairs.merge(unique.reset_index(names=_ROW), how="left")[_ROW]
                found = store.get_historical_features(
                    entity_df=unique.assign(**{_ROW: np.arange(len(unique))}),
                    features=list(self.refs),
                    full_feature_names=True,
                ).to_df()
            except Exception as exc:  # Feast and pandas raise many types
                msg = f"{STAGE}: point-in-time read of {len(keys)} rows failed: {exc!r}"
                raise FeatureStoreError(msg) from exc
        missing = [c for c in (_ROW, *self._columns) if c not in found.columns]
        if missing:
            msg = f"{STAGE}: Feast's historical features lack columns {missing}"
            raise FeatureStoreError(msg)
        values = np.full((len(unique), len(self.refs)), np.nan)
        rows = found[_ROW].to_numpy(dtype=np.int64)
        values[rows] = found[self._columns].to_numpy(dtype=np.float64, na_value=np.nan)
        result: npt.NDArray[np.float64] = values[inverse.to_numpy(dtype=np.int64)]
        return result

    def _opened(self) -> FeatureStore:
        if self._store is None:
            store = self._open_store()
            view = store.get_feature_view(self.refs[0].partition(":")[0])
            key_type = view.entity_columns[0].dtype.to_value_type()
            # Keys as the offline source holds them (the event may carry 7 for "7").
            self._normalise = str if key_type == ValueType.STRING else int
            self._store = store
        return self._store
