"""Feature freshness: how old each feature row was at event time, and the spec's limit.

The reader gives each row's event timestamp per feature view; here, per batch and with numpy
only, the age of every row at its event's time (event time minus the row's timestamp; NaN
where the store had no row of the view) and ``features.max_age_seconds``: a row older than
its view's limit is treated as a missing one, its values replaced by the spec's defaults and
flagged ``stale``.

Why the limit is ours: Feast 0.67 does not apply a view's ``ttl`` on online reads. The Redis
store's ``online_read`` returns the stored row and its timestamp as they are
(``RedisOnlineStore._get_features_for_entity``), and ``get_online_features`` marks every
value it read ``PRESENT`` (``feast.utils._populate_response_from_feature_data``); only its
pre-computed feature-vector path compares the time with the ttl, and even there it keeps the
value, with the status ``OUTSIDE_MAX_AGE``. The ttl bounds how far back ``materialize``
looks, not what is served: ``tests/integration/test_features.py`` reads a row older than
its view's ttl through Feast.

>>> from streams.spec import FeaturesSpec
>>> spec = FeaturesSpec(repo=".", refs=("a:x", "b:y"), defaults={"a:x": -1.0, "b:y": 0.0},
...                     max_age_seconds={"a": 60})
>>> class Rows:
...     values = np.array([[5.0, 7.0], [5.0, 7.0]])
...     defaulted = np.zeros((2, 2), dtype=bool)
...     entity_found = np.ones(2, dtype=bool)
...     timestamps = np.array([[1000.0, 1000.0], [1000.0, np.nan]])
>>> served = FreshnessPolicy(spec).apply(Rows(), np.array([1030.0, 1100.0]))
>>> served.ages.tolist()
[[30.0, 30.0], [100.0, nan]]
>>> served.values.tolist(), served.stale.tolist()
([[5.0, 7.0], [-1.0, 7.0]], [[False, False], [True, False]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streams.spec import FeaturesSpec


class FeatureRows(Protocol):
    """What a feature read returns (``features.reader.FeatureBatch``)."""

    values: npt.NDArray[np.float64]  # (n, refs), the store's defaults filled
    defaulted: npt.NDArray[np.bool_]  # (n, refs)
    entity_found: npt.NDArray[np.bool_]  # (n,)
    timestamps: npt.NDArray[np.float64]  # (n, views), NaN where the view's row is missing


@dataclass(eq=False)
class ServedFeatures:
    """The features a batch is scored with, after the freshness policy.

    ``values`` and ``defaulted`` (n, refs) include the stale values replaced by their
    defaults; ``missing`` are the values the store did not have and ``stale_values`` those it
    had too old (never both). ``ages`` and ``stale`` are per view (n, views): the age at event
    time of the view's row (NaN where it had none; kept for a stale row) and whether the row
    was older than the view's limit.
    """

    values: npt.NDArray[np.float64]
    defaulted: npt.NDArray[np.bool_]
    entity_found: npt.NDArray[np.bool_]
    missing: npt.NDArray[np.bool_]
    stale_values: npt.NDArray[np.bool_]
    ages: npt.NDArray[np.float64]
    stale: npt.NDArray[np.bool_]


class FreshnessPolicy:
    """``features.max_age_seconds`` of one spec, applied to whole batches."""

    def __init__(self, spec: FeaturesSpec) -> None:
        self.views: tuple[str, ...] = spec.views
        limits = spec.max_age_by_view()
        #: Whether any view has a limit (records then carry ``stale_views``).
        self.enforced = bool(limits)
        self._limits = np.array([limits.get(v, np.inf) for v in self.views], dtype=np.float64)
        self._defaults = np.array([spec.defaults[r] for r in spec.refs], dtype=np.float64)
        self._view_of_ref = np.array(
            [self.views.index(ref.partition(":")[0]) for ref in spec.refs], dtype=np.intp
        )

    def apply(self, rows: FeatureRows, event_times: npt.NDArray[np.float64]) -> ServedFeatures:
        """``rows`` as scored at ``event_times`` (epoch seconds, one per row)."""
        ages: npt.NDArray[np.float64] = event_times[:, None] - rows.timestamps
        # NaN (no row) compares False: a missing row is missing, never stale.
        stale: npt.NDArray[np.bool_] = ages > self._limits
        if not (self.enforced and stale.any()):
            return ServedFeatures(
                rows.values, rows.defaulted, rows.entity_found, rows.defaulted,
                np.zeros_like(rows.defaulted), ages, stale,
            )  # fmt: skip
        stale_values = stale[:, self._view_of_ref] & ~rows.defaulted
        return ServedFeatures(
            values=np.where(stale_values, self._defaults, rows.values),
            defaulted=rows.defaulted | stale_values,
            entity_found=rows.entity_found,
            missing=rows.defaulted,
            stale_values=stale_values,
            ages=ages,
            stale=stale,
        )
