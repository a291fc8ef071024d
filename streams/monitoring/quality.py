"""Data quality of what reaches the model, per model input column and window.

Per window (``monitoring.window``, cut exactly as the drift monitor cuts it) and per column
of the model input (the drift columns: a numeric event field, a one-hot group named after its
field, a feature ``view__feature``), the share of values that fail a check:

- ``missing`` (every column): of the scored events, those whose value is not their own: a
  feature the store had no row for, or a stale one (``features.max_age_seconds``), both
  served as the spec's default; an optional event field absent or null (its declared
  default served). A required field is never missing: its absence is a dead letter.
- ``at_min`` / ``at_max`` (int and float event fields that declare ``min`` / ``max``): of
  the scored events, those whose value equals the bound, compared as the model sees it
  (float32). A clipped or saturated source piles up there.
- ``unknown`` (one-hot category fields): of the window's input events (scored plus
  dead-lettered), those dead-lettered for an unknown category of the field. The decode stage
  refuses unknown categories (a spec cannot map them to an "other" bucket), so none reaches
  the model: this is the share that did not. An event is dead-lettered for its first bad
  field only, so a later field's unknown value behind it is not counted.

Counting is numpy (the matrix scored, the defaulted-feature mask, one int of absent-field
bits per event taken with one ``fromiter`` per batch), a few sums over the rows of
consecutive batches, held and counted together (``pending.py``); a batch's dead letters are
counted in the window its first scored event falls in (all of them in the open one when none
was scored). When a window closes the gauges
``streamscore_data_quality_ratio{column, check}`` are set and a ``quality`` record goes to
the monitoring topic.

>>> from pathlib import Path
>>> from streams.spec import load_spec_text
>>> spec = load_spec_text('''
... name: q
... input: {topic: events}
... event:
...   id_field: id
...   fields:
...     id: {type: string}
...     user: {type: string}
...     amount: {type: float, min: 0, max: 100}
... entity: {field: user, join_key: user_id}
... features: {repo: r, refs: ["s:spend"], defaults: {"s:spend": 0.0}}
... model_input: [{event: amount}, {feature: "s:spend"}]
... model: {name: m}
... output: {topic: scores, dead_letter_topic: dlq}
... monitoring: {window: {events: 4}}
... ''', base_dir=Path("/tmp"))
>>> quality = QualityMonitor(spec, Metrics())
>>> matrix = np.array([[100, 3], [5, 0], [100, 0], [7, 2]], dtype=np.float32)
>>> defaulted = np.array([[False], [True], [True], [False]])
>>> (record,) = quality.observe(matrix, defaulted, [], dead_letters=0, unknown_categories=[])
>>> orjson.loads(record.value)["columns"]
{'amount': {'missing': 0.0, 'at_min': 0.0, 'at_max': 0.5}, 's__spend': {'missing': 0.5}}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from models.profile import column_groups
from streams.metrics import Metrics
from streams.monitoring.pending import PendingRows
from streams.monitoring.window import Windows
from streams.scoring.records import OutputRecord, iso_utc
from streams.scoring.validation import Event, optional_bits
from streams.spec import PipelineSpec

KIND = "quality"  # the monitoring record's kind (drift records are "drift")
CHECKS = ("missing", "at_min", "at_max", "unknown")
#: Absent-field bits taken from the events per ``fromiter`` (an int64 holds 62 safely).
_BITS_PER_WORD = 62


@dataclass(frozen=True)
class _Layout:
    """Where each check of each column reads the batch (index arrays, built once)."""

    names: list[str]  # one per model_input entry, as drift names them
    feature_at: npt.NDArray[np.intp]  # columns (in ``names``) that are features
    feature_ref: npt.NDArray[np.intp]  # and their ref index in the defaulted mask
    absent_at: npt.NDArray[np.intp]  # columns that are optional event fields
    absent_bit: list[int]  # and the bit position of each in ``Event.absent``
    min_at: npt.NDArray[np.intp]  # columns with a declared min
    min_column: npt.NDArray[np.intp]  # their matrix column
    min_value: npt.NDArray[np.float32]
    max_at: npt.NDArray[np.intp]
    max_column: npt.NDArray[np.intp]
    max_value: npt.NDArray[np.float32]
    category_at: dict[str, int]  # a one-hot field -> its column

    @classmethod
    def of(cls, spec: PipelineSpec) -> _Layout:
        refs = list(spec.features.refs)
        bits = optional_bits(spec.event)
        names = [group.name for group in column_groups(spec)]
        feature: list[tuple[int, int]] = []
        absent: list[tuple[int, int]] = []
        low: list[tuple[int, int, float]] = []
        high: list[tuple[int, int, float]] = []
        category: dict[str, int] = {}
        matrix_column = {name: j for j, name in enumerate(spec.input_columns())}
        for i, entry in enumerate(spec.model_input):
            if entry.feature is not None:
                feature.append((i, refs.index(entry.feature)))
                continue
            name = entry.event or ""
            declared = spec.event.fields[name]
            if name in bits:
                absent.append((i, bits[name].bit_length() - 1))
            if entry.encode == "one_hot":
                category.setdefault(name, i)
                continue
            if declared.min is not None:
                low.append((i, matrix_column[name], declared.min))
            if declared.max is not None:
                high.append((i, matrix_column[name], declared.max))

        def at(pairs: Sequence[tuple[Any, ...]], k: int) -> npt.NDArray[np.intp]:
            return np.array([p[k] for p in pairs], dtype=np.intp)

        return cls(
            names=names,
            feature_at=at(feature, 0), feature_ref=at(feature, 1),
            absent_at=at(absent, 0), absent_bit=[bit for _, bit in absent],
            min_at=at(low, 0), min_column=at(low, 1),
            min_value=np.array([v for *_, v in low], dtype=np.float32),
            max_at=at(high, 0), max_column=at(high, 1),
            max_value=np.array([v for *_, v in high], dtype=np.float32),
            category_at=category,
        )  # fmt: skip

    def absent_words(self, events: Sequence[Event]) -> npt.NDArray[np.int64] | None:
        """(n, words) of the events' absent-field bits, ``_BITS_PER_WORD`` to a word (None:
        the spec's model input has no optional event field)."""
        if not self.absent_bit:
            return None
        words = 1 + max(self.absent_bit) // _BITS_PER_WORD
        if words == 1:  # the usual case
            return np.fromiter((e.absent for e in events), np.int64, len(events))[:, None]
        out = np.empty((len(events), words), dtype=np.int64)
        mask = (1 << _BITS_PER_WORD) - 1
        for word in range(words):
            shift = word * _BITS_PER_WORD
            out[:, word] = np.fromiter(
                ((e.absent >> shift) & mask for e in events), dtype=np.int64, count=len(events)
            )
        return out

    def absent(self, words: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """(n, optional columns): which rows of ``absent_words`` lacked each optional field."""
        out = np.empty((len(words), len(self.absent_bit)), dtype=np.bool_)
        for j, bit in enumerate(self.absent_bit):
            out[:, j] = (words[:, bit // _BITS_PER_WORD] >> (bit % _BITS_PER_WORD)) & 1
        return out


@dataclass
class _Window:
    """The open window's counts (``events``, ``started``, ``last``: a ``window.Span``)."""

    missing: npt.NDArray[np.int64]
    at_min: npt.NDArray[np.int64]
    at_max: npt.NDArray[np.int64]
    unknown: npt.NDArray[np.int64]
    dead_letters: int = 0
    events: int = 0
    started: float = 0.0
    last: float = 0.0

    @classmethod
    def empty(cls, layout: _Layout) -> _Window:
        return cls(
            missing=np.zeros(len(layout.names), dtype=np.int64),
            at_min=np.zeros(len(layout.min_at), dtype=np.int64),
            at_max=np.zeros(len(layout.max_at), dtype=np.int64),
            unknown=np.zeros(len(layout.category_at), dtype=np.int64),
        )

    def add_dead_letters(self, count: int, unknown: npt.NDArray[np.int64]) -> None:
        self.dead_letters += count
        self.unknown += unknown

    def reset(self) -> None:
        for counts in (self.missing, self.at_min, self.at_max, self.unknown):
            counts[:] = 0
        self.dead_letters = 0


class QualityMonitor:
    """Windowed data quality of one pipeline's model input, fed every batch.

    ``observe`` (the event loop, per batch) counts the batch and returns the monitoring
    records of the windows it closed. Unlike drift, it needs no reference and does not
    depend on the model version: its windows run on across alias moves.
    """

    def __init__(
        self, spec: PipelineSpec, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.pipeline = spec.name
        self.topic = spec.monitoring_topic
        self.clock = clock
        self.windows = Windows(spec.monitoring.window)
        self._layout = layout = _Layout.of(spec)
        self._window = _Window.empty(layout)
        self._key = spec.name.encode()
        self._categories = list(layout.category_at)
        gauge = metrics.data_quality
        names = layout.names

        def children(check: str, at: Sequence[int]) -> list[Any]:
            return [gauge.labels(self.pipeline, names[i], check) for i in at]

        self._gauges = {
            "missing": children("missing", range(len(names))),
            "at_min": children("at_min", layout.min_at.tolist()),
            "at_max": children("at_max", layout.max_at.tolist()),
            "unknown": children("unknown", list(layout.category_at.values())),
        }
        self._m_windows = metrics.data_quality_windows.labels(self.pipeline)
        # Batches' rows are counted a thousand at a time, not a batch at a time (pending.py).
        self._pending = PendingRows(self._count)

    def observe(
        self,
        matrix: npt.NDArray[np.float32] | None,
        feature_defaulted: npt.NDArray[np.bool_] | None,
        events: Sequence[Event],
        dead_letters: int,
        unknown_categories: Sequence[str],
    ) -> list[OutputRecord]:
        """Count one batch: the matrix scored (None: nothing was), which of its feature
        values were defaulted (n, refs), its scored events (for their absent fields), and
        its dead letters with the field of each unknown category among them."""
        n = 0 if matrix is None else len(matrix)
        words = self._layout.absent_words(events) if n else None
        refused: tuple[int, npt.NDArray[np.int64]] | None = (
            (dead_letters, self._count_unknown(unknown_categories)) if dead_letters else None
        )
        closed: list[OutputRecord] = []
        window = self._window
        for rows, closes in self.windows.split(window, n, self.clock()):
            if rows.stop > rows.start:
                assert matrix is not None and feature_defaulted is not None
                self._pending.add(
                    matrix[rows], feature_defaulted[rows], None if words is None else words[rows]
                )
                if refused is not None:  # in the window of the batch's first scored event
                    window.add_dead_letters(*refused)
                    refused = None
            if closes:
                self._pending.flush()
                closed.append(self._close(window))
        if refused is not None:  # nothing scored: into the open window
            window.add_dead_letters(*refused)
        return closed

    def _count_unknown(self, fields: Sequence[str]) -> npt.NDArray[np.int64]:
        counts = np.zeros(len(self._categories), dtype=np.int64)
        at = self._layout.category_at
        for name in fields:  # one per dead letter for an unknown category: rare
            if name in at:
                counts[self._categories.index(name)] += 1
        return counts

    def _count(
        self,
        matrix: npt.NDArray[np.float32],
        defaulted: npt.NDArray[np.bool_],
        absent_words: npt.NDArray[np.int64] | None,
    ) -> None:
        """Add rows to the open window's counts (``PendingRows`` calls it, rows held over
        several batches at once)."""
        layout, window = self._layout, self._window
        if len(layout.feature_at):
            window.missing[layout.feature_at] += defaulted[:, layout.feature_ref].sum(axis=0)
        if absent_words is not None:
            window.missing[layout.absent_at] += layout.absent(absent_words).sum(axis=0)
        if len(layout.min_at):
            window.at_min += (matrix[:, layout.min_column] == layout.min_value).sum(axis=0)
        if len(layout.max_at):
            window.at_max += (matrix[:, layout.max_column] == layout.max_value).sum(axis=0)

    def _close(self, window: _Window) -> OutputRecord:
        layout = self._layout
        events = max(window.events, 1)
        shares = {
            "missing": window.missing / events,
            "at_min": window.at_min / events,
            "at_max": window.at_max / events,
            "unknown": window.unknown / max(window.events + window.dead_letters, 1),
        }
        columns: dict[str, dict[str, float]] = {name: {} for name in layout.names}
        where = {
            "missing": range(len(layout.names)),
            "at_min": layout.min_at.tolist(),
            "at_max": layout.max_at.tolist(),
            "unknown": list(layout.category_at.values()),
        }
        for check in CHECKS:
            values = shares[check].tolist()
            for i, child, value in zip(where[check], self._gauges[check], values, strict=True):
                child.set(value)
                columns[layout.names[i]][check] = round(value, 6)
        self._m_windows.inc()
        value = {
            "kind": KIND,
            "pipeline": self.pipeline,
            "window_start": iso_utc(window.started),
            "window_end": iso_utc(window.last),
            "events": window.events,
            "dead_letters": window.dead_letters,
            "columns": columns,
        }
        window.reset()  # its ``events`` are reset by ``split`` when it resumes
        return OutputRecord(self.topic, self._key, orjson.dumps(value))
