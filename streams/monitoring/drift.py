"""Drift of the served inputs and scores against the primary's training reference.

Scored rows are binned in one vectorised pass (``models.profile.ProfileBins.count``: a
comparison per edge rank over every numeric column, one matrix product for the one-hot
groups, one ``bincount``; nothing per event in Python) and added to the open window's
counts; the rows of consecutive batches are held and binned together (``pending.py``), up to
a thousand at once.
When the window closes (``monitoring.window``: a number of events, or seconds) the population
stability index of every column and of the score is computed against the reference shares,
the PSI gauges are set, and one record describing the window goes to the monitoring topic.
The window also sums the primary's label-free accuracy estimate (``estimate.py``).

PSI = sum over bins of (a - e) * ln(a / e), with ``a`` the window's share of a bin and ``e``
the reference's; both are floored at ``EPSILON`` so that an empty bin counts as a rare one
instead of an infinite term. It is the symmetric Kullback-Leibler divergence:

>>> import numpy as np
>>> reference = np.array([0.5, 0.5, 0.2, 0.8])
>>> psi(reference, np.array([50, 50, 80, 20]), [(0, 2), (2, 4)]).round(4).tolist()
[0.0, 1.6636]
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from models.errors import ModelError
from models.profile import ProfileBins, ReferenceProfile
from models.registry import ModelRegistry
from streams.metrics import Metrics
from streams.monitoring.estimate import expected_correct
from streams.monitoring.pending import PendingRows
from streams.monitoring.slices import (
    MIN_SLICE_EVENTS,
    Codes,
    SliceDrift,
    SliceGauges,
    SliceLayout,
)
from streams.monitoring.window import Windows
from streams.scoring.records import OutputRecord, iso_utc
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)

#: Floor of a bin's share in the PSI: an empty bin weighs as a 1-in-10,000 one.
EPSILON = 1e-4
KIND = "drift"  # the monitoring record's kind (the topic may carry other kinds later)


def psi(
    reference: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    segments: Sequence[tuple[int, int]],
) -> npt.NDArray[np.float64]:
    """The PSI of each segment (contiguous bins of one column, in order) of ``counts``
    against ``reference`` shares laid out the same way."""
    starts = np.fromiter((start for start, _ in segments), dtype=np.intp, count=len(segments))
    lengths = np.fromiter((end - start for start, end in segments), dtype=np.intp)
    totals = np.add.reduceat(counts, starts).astype(np.float64)
    actual = counts / np.repeat(np.maximum(totals, 1.0), lengths)
    a = np.maximum(actual, EPSILON)
    e = np.maximum(reference, EPSILON)
    return np.add.reduceat((a - e) * np.log(a / e), starts)


def slice_psi(
    counts: npt.NDArray[np.int64], reference: npt.NDArray[np.float64], min_events: int
) -> npt.NDArray[np.float64]:
    """The PSI of each row of ``counts`` (a slice value's counts in the score bins) against
    the one ``reference`` distribution; NaN for a row with fewer than ``min_events``."""
    rows, bins = counts.shape
    segments = [(i * bins, (i + 1) * bins) for i in range(rows)]
    values = psi(np.tile(reference, rows), counts.ravel(), segments)
    return np.where(counts.sum(axis=1) >= min_events, values, np.nan)


def level(value: float, warn: float, alert: float) -> str:
    """'alert' above the alert threshold, 'warn' at or above the warn one, else 'ok'."""
    return "alert" if value > alert else "warn" if value >= warn else "ok"


def load_reference(registry: ModelRegistry, name: str, version: int) -> ReferenceProfile | None:
    """The version's reference profile, or None (none stored, or unreadable: logged).
    Blocking (file reads): call it off the event loop."""
    try:
        return registry.version(name, version).read_profile()
    except ModelError as exc:
        log.warning("drift: cannot use the reference profile of %s v%d: %s", name, version, exc)
        return None


@dataclass
class _Reference:
    bins: ProfileBins
    names: list[str]  # the columns' names, in profile order
    slices: SliceDrift | None = None  # the score bins per slice value (monitoring.slices)

    @classmethod
    def compile(
        cls, profile: ReferenceProfile, columns: Sequence[str], slices: SliceLayout | None
    ) -> _Reference:
        sliced = SliceDrift(slices, profile.score.edges) if slices is not None else None
        return cls(ProfileBins(profile, columns), [c.name for c in profile.columns], sliced)


@dataclass
class _Window:
    model: str
    version: int
    reference: _Reference
    counts: npt.NDArray[np.int64]
    events: int = 0
    started: float = 0.0  # the clock when its first and last events were counted
    last: float = 0.0
    expected_correct: float = 0.0  # sum over its events: the label-free accuracy estimate
    slice_counts: npt.NDArray[np.int64] | None = None  # (slice values, score bins)


class DriftMonitor:
    """Windowed drift of one pipeline's primary model, fed every scored batch.

    ``use`` (any thread, before the version serves) registers a version's profile;
    ``observe`` (the event loop, per batch) counts the batch and returns the monitoring
    records of the windows it closed. A window holds one model version: when the primary
    changes, the open window is dropped (its PSI would mix two references).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = spec.name
        self.topic = spec.monitoring_topic
        self.columns = spec.input_columns()
        self.windows = Windows(spec.monitoring.window)
        self.warn = spec.monitoring.drift.warn
        self.alert = spec.monitoring.drift.alert
        self.clock = clock
        self._metrics = metrics
        self._references: dict[tuple[str, int], _Reference | None] = {}
        self._serving: tuple[str, int] | None = None
        self._window: _Window | None = None
        self._alerting: set[str] = set()
        self._said_no_profile: set[tuple[str, int]] = set()
        self._key = spec.name.encode()
        # The label-free accuracy estimate (streams/monitoring/estimate.py): classifiers only.
        self.estimates = spec.task == "classification"
        self.threshold = spec.model.decision_threshold
        self._slices = SliceLayout.of(spec)
        self._slice_gauges = SliceGauges(metrics, spec.name)
        # Batches' rows are binned a thousand at a time, not a batch at a time (pending.py).
        self._pending = PendingRows(self._count)

    def use(self, model: str, version: int, profile: ReferenceProfile | None) -> None:
        """Register the profile of a version about to serve (None: it has none)."""
        reference = None
        if profile is not None:
            try:
                reference = _Reference.compile(profile, self.columns, self._slices)
            except ValueError as exc:
                log.warning(
                    "pipeline %s: drift: the reference profile of %s v%d does not fit the"
                    " spec's model input (%s); drift is not measured for it",
                    self.pipeline, model, version, exc,
                )  # fmt: skip
        self._references[(model, version)] = reference

    def observe(
        self,
        model: str,
        version: int,
        matrix: npt.NDArray[np.float32],
        scores: npt.NDArray[np.float64],
        slices: Codes | None = None,
    ) -> list[OutputRecord]:
        """Count one batch (the exact matrix scored, the primary's scores, and with
        ``monitoring.slices`` the events' slice codes, ``SliceLayout.codes``)."""
        if (model, version) != self._serving:
            self._switch(model, version)
        window = self._window
        if window is None:
            return []
        closed: list[OutputRecord] = []
        codes = slices if window.reference.slices is not None else None
        for rows, closes in self.windows.split(window, len(scores), self.clock()):
            if rows.stop > rows.start:
                self._pending.add(
                    matrix[rows], scores[rows], None if codes is None else codes[rows]
                )
            if closes:
                self._pending.flush()
                closed.append(self._close(window))
        return closed

    def _count(
        self,
        matrix: npt.NDArray[np.float32],
        scores: npt.NDArray[np.float64],
        slices: Codes | None,
    ) -> None:
        """Add rows to the open window's counts (``PendingRows`` calls it, rows held over
        several batches at once)."""
        window = self._window
        assert window is not None  # rows are dropped, never counted, when it is closed
        window.counts += window.reference.bins.count(matrix, scores)
        if self.estimates:
            window.expected_correct += float(expected_correct(scores, self.threshold).sum())
        sliced = window.reference.slices
        if sliced is not None and slices is not None and window.slice_counts is not None:
            window.slice_counts += sliced.count(scores, slices)

    def _switch(self, model: str, version: int) -> None:
        self._pending.clear()  # rows of the dropped window
        old = self._window
        if old is not None and old.events:
            log.info(
                "pipeline %s: drift: window of %d events dropped, the primary changed from"
                " %s v%d to %s v%d",
                self.pipeline, old.events, old.model, old.version, model, version,
            )  # fmt: skip
        self._serving = (model, version)
        if (model, version) not in self._references:
            log.warning(
                "pipeline %s: drift: no reference registered for %s v%d; drift is not"
                " measured for it", self.pipeline, model, version,
            )  # fmt: skip
        reference = self._references.get((model, version))
        self._metrics.drift_reference.labels(self.pipeline, model).set(reference is not None)
        if reference is None:
            self._window = None
            self._forget_series(model, old)
            if (model, version) not in self._said_no_profile:
                self._said_no_profile.add((model, version))
                log.warning(
                    "pipeline %s: model %s v%d has no training reference profile (registered"
                    " before `streamscore train` stored one; retrain to get one): its drift is"
                    " not measured, and no PSI series is exported for it",
                    self.pipeline, model, version,
                )  # fmt: skip
            return
        counts = np.zeros(reference.bins.size, dtype=np.int64)
        self._window = _Window(model, version, reference, counts)
        if reference.slices is not None:
            self._window.slice_counts = reference.slices.empty()

    def _forget_series(self, model: str, old: _Window | None) -> None:
        """PSI series of a version that no longer serves would describe the wrong model."""
        if old is None:
            return
        for name in old.reference.names:
            with contextlib.suppress(KeyError):  # no window of it closed yet
                self._metrics.drift_psi.remove(self.pipeline, model, name)
        with contextlib.suppress(KeyError):
            self._metrics.drift_score_psi.remove(self.pipeline, model)
        with contextlib.suppress(KeyError):
            self._metrics.estimated_accuracy.remove(self.pipeline, model)
        if old.reference.slices is not None:
            self._slice_gauges.remove(model, old.reference.slices.rows)

    def _close(self, window: _Window) -> OutputRecord:
        reference = window.reference
        bins = reference.bins
        values = psi(bins.reference, window.counts, bins.segments).tolist()
        gauge = self._metrics.drift_psi
        for name, value in zip(reference.names, values, strict=False):
            gauge.labels(self.pipeline, window.model, name).set(value)
        self._metrics.drift_score_psi.labels(self.pipeline, window.model).set(values[-1])
        self._metrics.drift_windows.labels(self.pipeline, window.model).inc()
        if (estimate := self._estimate(window)) is not None:
            self._metrics.estimated_accuracy.labels(self.pipeline, window.model).set(estimate)
        record = self._record(window, values)
        self._say_alerts(window, values)
        window.counts = np.zeros_like(window.counts)
        window.expected_correct = 0.0
        if window.slice_counts is not None:
            window.slice_counts = np.zeros_like(window.slice_counts)
        return record

    def _record(self, window: _Window, values: list[float]) -> OutputRecord:
        reference = window.reference
        bins = reference.bins
        profile = bins.profile
        share_of = window.counts / max(window.events, 1)
        distributions = [*profile.columns, profile.score]

        def describe(i: int) -> dict[str, Any]:
            start, end = bins.segments[i]
            return {
                "psi": round(values[i], 6),
                "level": level(values[i], self.warn, self.alert),
                "edges": distributions[i].edges,
                "reference": [round(s, 6) for s in distributions[i].shares],
                "shares": np.round(share_of[start:end], 6).tolist(),
            }

        value = {
            "kind": KIND,
            "pipeline": self.pipeline,
            "model": window.model,
            "model_version": window.version,
            "window_start": iso_utc(window.started),
            "window_end": iso_utc(window.last),
            "events": window.events,
            "thresholds": {"warn": self.warn, "alert": self.alert},
            "columns": {name: describe(i) for i, name in enumerate(reference.names)},
            "score": describe(len(reference.names)),
            # Label-free (null for regression): the realized figure comes with the labels.
            "estimated_accuracy": self._estimate(window),
        }
        if reference.slices is not None and window.slice_counts is not None:
            value["slices"] = self._close_slices(window, reference.slices, window.slice_counts)
        return OutputRecord(self.topic, self._key, orjson.dumps(value))

    def _estimate(self, window: _Window) -> float | None:
        """The window's expected accuracy at the threshold (None: a regression model)."""
        if not self.estimates:
            return None
        return round(window.expected_correct / max(window.events, 1), 6)

    def _close_slices(
        self, window: _Window, sliced: SliceDrift, counts: npt.NDArray[np.int64]
    ) -> dict[str, dict[str, Any]]:
        """Set the slice PSI gauges; the record's ``slices``: per field, per value seen in
        the window, its events, PSI (null under MIN_SLICE_EVENTS), level and score shares."""
        reference = np.asarray(window.reference.bins.profile.score.shares, dtype=np.float64)
        values = slice_psi(counts, reference, MIN_SLICE_EVENTS)
        self._slice_gauges.set(window.model, sliced.rows, values.tolist())
        events = counts.sum(axis=1)
        shares = np.round(counts / np.maximum(events, 1)[:, None], 6)
        described: dict[str, dict[str, Any]] = {}
        for i, (field, label) in enumerate(sliced.rows):
            if not events[i]:
                continue
            value = None if np.isnan(values[i]) else round(float(values[i]), 6)
            described.setdefault(field, {})[label] = {
                "events": int(events[i]),
                "psi": value,
                "level": None if value is None else level(value, self.warn, self.alert),
                "shares": shares[i].tolist(),
            }
        return described

    def _say_alerts(self, window: _Window, values: list[float]) -> None:
        """One warning when a column (or the score) goes above the alert threshold, not one
        per window while it stays there."""
        names = [*window.reference.names, "score"]
        alerting = {name for name, value in zip(names, values, strict=True) if value > self.alert}
        if new := alerting - self._alerting:
            detail = ", ".join(f"{n} {values[names.index(n)]:.3f}" for n in sorted(new))
            log.warning(
                "pipeline %s: drift above the alert threshold %g (PSI, window of %d events,"
                " %s v%d): %s",
                self.pipeline, self.alert, window.events, window.model, window.version, detail,
            )  # fmt: skip
        self._alerting = alerting
