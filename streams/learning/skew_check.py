"""The sampled online/offline skew check, run by the labels consumer on each joined batch.

Sampling is decided here, at learning time, by a hash of the event id
(``streams.monitoring.skew.sampled``): the scoring path only keeps each prediction's entity
key and event time with its vector (``monitoring.skew`` on), and nothing per event is
hashed there. Only labelled predictions can be checked: the prediction store keeps the
served vector until the label comes, and the labels consumer already reads it.

``offer`` never waits and never raises: the sampled rows of a batch become one task that
reads Feast's offline store in a thread (``features.offline``, tenths of a second, blocking),
compares (``streams.monitoring.skew.compare``), records the result in Redis and then the
metrics. At most ``monitoring.skew.max_in_flight`` such tasks are pending; a sample taken
while they are is dropped and counted (``busy``), and a check that fails is counted
(``failed``) and logged. The label pipeline goes on either way. A label batch replayed
after a crash (learned nothing twice) may be checked twice: the check counts what it
compared, and an extra comparison changes no ratio.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streams.metrics import Metrics
from streams.monitoring.skew import SkewColumns, SkewLog, SkewResult, compare, sampled
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)

STAGE = "skew"
#: Why a sampled prediction was not checked (the reason label; a bounded set).
UNCHECKED_REASONS = ("busy", "failed", "no_key")


class OfflineReader(Protocol):
    """``features.offline.PointInTimeReader``: blocking, thread-safe."""

    def read(
        self, keys: Sequence[str | int], times: Sequence[float]
    ) -> npt.NDArray[np.float64]: ...


class SkewChecker:
    def __init__(
        self,
        spec: PipelineSpec,
        reader: OfflineReader,
        record: SkewLog,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.skew = spec.monitoring.skew
        self.layout = SkewColumns.of(spec)
        self._reader = reader
        self._record = record
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        # (check time, largest difference per feature) of the checks in the window.
        self._recent: collections.deque[tuple[float, npt.NDArray[np.float64]]] = collections.deque()
        name = spec.name
        self._m_checked = metrics.skew_checked.labels(name)
        self._m_mismatched = [metrics.skew_mismatched.labels(name, f) for f in self.layout.names]
        self._m_largest = [
            metrics.skew_max_abs_difference.labels(name, f) for f in self.layout.names
        ]
        self._m_unchecked = {r: metrics.skew_unchecked.labels(name, r) for r in UNCHECKED_REASONS}

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def offer(self, joined: Sequence[dict[str, Any]]) -> None:
        """Check this batch's sampled predictions (``streams.learning.join.joined_record``)
        in the background, if there is room; never waits."""
        rate = self.skew.sample_rate
        rows = [r for r in joined if sampled(r["event_id"], rate)]
        keyed = [r for r in rows if r["entity_key"] is not None and r["event_time"] is not None]
        if len(keyed) < len(rows):
            self._m_unchecked["no_key"].inc(len(rows) - len(keyed))
        if not keyed:
            return
        if len(self._tasks) >= self.skew.max_in_flight:
            self._m_unchecked["busy"].inc(len(keyed))
            return
        task = asyncio.ensure_future(self._check(keyed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, rows: list[dict[str, Any]]) -> None:
        try:
            result = await asyncio.to_thread(self._compare, rows)
            await self._record.record(result, self._clock())
        except Exception as exc:  # counted and logged: the label pipeline never sees it
            self._m_unchecked["failed"].inc(len(rows))
            log.warning(
                "%s: pipeline %s: %d sampled predictions not checked: %s",
                STAGE, self.spec.name, len(rows), exc,
            )  # fmt: skip
            return
        self._publish(result)

    def _compare(self, rows: list[dict[str, Any]]) -> SkewResult:
        """In a thread: the offline read, then the comparison."""
        keys = [r["entity_key"] for r in rows]
        times = [r["event_time"] for r in rows]
        offline = self._reader.read(keys, times)
        served = np.stack([r["vector"] for r in rows])
        event_ids = [r["event_id"] for r in rows]
        return compare(self.layout, served, offline, self.skew.tolerance, event_ids, keys, times)

    def _publish(self, result: SkewResult) -> None:
        self._m_checked.inc(result.checked)
        for counter, count in zip(self._m_mismatched, result.mismatched.tolist(), strict=True):
            if count:
                counter.inc(count)
        now = self._clock()
        self._recent.append((now, result.max_abs_difference))
        while self._recent and self._recent[0][0] < now - self.skew.window_seconds:
            self._recent.popleft()
        largest = np.max([values for _, values in self._recent], axis=0)
        for gauge, value in zip(self._m_largest, largest.tolist(), strict=True):
            gauge.set(value)

    async def close(self, timeout: float) -> None:
        """Give pending checks ``timeout`` seconds, then cancel them (a thread already
        reading finishes on its own; its result is dropped)."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=max(timeout, 0.0))
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
