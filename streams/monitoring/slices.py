"""Slices: the spec's ``monitoring.slices`` fields, and the primary's score drift per value.

A slice field is a category or bool event field (the spec refuses any other, and a
category field with more than ``MAX_SLICE_VALUES`` categories). Each of its values is a
label value of the slice metrics: the declared categories, or ``false``/``true``, plus
``(none)`` for an event that lacks an optional field without a default. So the series are
bounded by the spec, never by the traffic.

``SliceLayout`` turns a batch into one small code matrix (a column per slice field) and
codes back into the values the prediction store keeps for the learner. A slice field that
is also a model input is read from the matrix scored (a one-hot group's hot column, a
bool's 0/1), in numpy; any other is read from the events, one list comprehension per field
(as ``models.inputs.InputLayout`` builds the model input).

``SliceDrift`` counts a batch's scores per slice value into the reference's score bins with
one ``bincount`` (flat index = slice value x score bin), and at a window's close gives each
value's PSI against the reference's *whole* held-out score distribution: a slice whose
scores always differed from the population shows a constant offset, and what to watch is
its change. A value with fewer than ``MIN_SLICE_EVENTS`` events in the window gets no PSI
(with 10 bins, sampling noise alone adds about 9/n to it).

>>> from pathlib import Path
>>> from streams.spec import FieldSpec, EventSpec
>>> fields = {"id": FieldSpec(type="string"),
...           "channel": FieldSpec(type="category", values=("web", "app")),
...           "new": FieldSpec(type="bool", required=False)}
>>> layout = SliceLayout.compile(EventSpec(id_field="id", fields=fields), ("channel", "new"))
>>> codes = layout.codes([{"channel": "app", "new": True}, {"channel": "web"}])
>>> codes.tolist()
[[1, 1], [0, 2]]
>>> layout.from_matrix = {0: np.array([0, 1])}  # channel one-hot in the model input's 0, 1
>>> layout.codes([{"new": True}] * 3, np.array([[0, 1], [1, 0], [0, 0]], np.float32)).tolist()
[[1, 1], [0, 1], [2, 1]]
>>> layout.stored(codes)
[['app', True], ['web', None]]
>>> [(f.name, f.labels) for f in layout.fields]
[('channel', ('web', 'app', '(none)')), ('new', ('false', 'true', '(none)'))]
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.metrics import Metrics
from streams.spec import EventSpec, PipelineSpec

#: The label value of an event without the field (an optional field with no default).
NONE_VALUE = "(none)"
#: Events a slice value needs in a window for its PSI to be computed (and exported).
MIN_SLICE_EVENTS = 100

Codes = npt.NDArray[np.int64]
#: A value as the prediction store keeps it: a category, a bool, or None (absent).
StoredValue = str | bool | None


@dataclass(frozen=True)
class SliceField:
    """One slice field: its values' label texts and stored forms, by code (absent last)."""

    name: str
    labels: tuple[str, ...]
    stored: tuple[StoredValue, ...]

    @property
    def absent(self) -> int:
        return len(self.labels) - 1

    def code_of(self, value: object) -> int:
        """The code of a stored (or event) value; ``absent`` for None or an unknown one."""
        for code, known in enumerate(self.stored[:-1]):
            if value == known and type(value) is type(known):
                return code
        return self.absent


class SliceLayout:
    """The slice fields of a spec, in ``monitoring.slices`` order."""

    def __init__(self, fields: Sequence[SliceField]) -> None:
        self.fields = tuple(fields)
        #: Field index -> its model input columns: a one-hot group's, in declared order
        #: (an int array), or a bool's one column (an int); ``compile`` fills it.
        self.from_matrix: dict[int, Any] = {}
        sizes = [len(f.labels) for f in self.fields]
        self._radix = np.cumprod([1, *sizes[:-1]]).astype(np.int64)  # one code per combination
        self._rows: dict[int, list[StoredValue]] = {}  # combination -> stored values
        # Codes of the values events carry; bools and strings never meet in one field.
        self._lookups: list[dict[Any, int]] = [
            {value: code for code, value in enumerate(f.stored[:-1])} for f in self.fields
        ]

    @classmethod
    def compile(cls, event: EventSpec, names: Sequence[str]) -> SliceLayout:
        fields = []
        for name in names:
            declared = event.fields[name]
            if declared.type == "bool":
                labels: tuple[str, ...] = ("false", "true")
                stored: tuple[StoredValue, ...] = (False, True)
            else:
                labels = tuple(declared.values or ())
                stored = labels
            fields.append(SliceField(name, (*labels, NONE_VALUE), (*stored, None)))
        return cls(fields)

    @classmethod
    def of(cls, spec: PipelineSpec) -> SliceLayout | None:
        """The spec's slice layout, or None when it declares no slices."""
        if not spec.monitoring.slices:
            return None
        layout = cls.compile(spec.event, spec.monitoring.slices)
        index = {name: i for i, name in enumerate(spec.input_columns())}
        inputs = {entry.event: entry.encode for entry in spec.model_input if entry.event}
        for j, field in enumerate(layout.fields):
            if field.name not in inputs:
                continue
            if inputs[field.name] == "one_hot":
                columns = [index[f"{field.name}={value}"] for value in field.stored[:-1]]
                layout.from_matrix[j] = np.asarray(columns, dtype=np.intp)
            else:  # a bool model input: 0 or 1 (an optional one has a default)
                layout.from_matrix[j] = index[field.name]
        return layout

    def codes(
        self, events: Sequence[Mapping[str, Any]], matrix: npt.NDArray[np.float32] | None = None
    ) -> Codes:
        """(events, slice fields) codes of validated events, or of the ``matrix`` built
        from them for the fields that are model inputs."""
        codes = np.empty((len(events), len(self.fields)), dtype=np.int64)
        for j, (field, lookup) in enumerate(zip(self.fields, self._lookups, strict=True)):
            columns = self.from_matrix.get(j)
            if matrix is not None and isinstance(columns, np.ndarray):
                # The hot column's rank (1..k), 0 when none is set (an absent value).
                hot = matrix[:, columns] @ np.arange(1, len(columns) + 1, dtype=np.float32)
                codes[:, j] = np.where(hot > 0, hot.astype(np.int64) - 1, field.absent)
            elif matrix is not None and columns is not None:
                codes[:, j] = matrix[:, columns] != 0
            else:
                name, absent = field.name, field.absent
                codes[:, j] = [lookup.get(event.get(name), absent) for event in events]
        return codes

    def stored(self, codes: Codes) -> list[list[StoredValue]]:
        """Each event's slice values as the prediction store keeps them. Events with the
        same values share one list, made once per combination seen (the spec bounds them)."""
        rows = self._rows
        return [rows[c] if c in rows else self._row(c) for c in (codes @ self._radix).tolist()]

    def _row(self, combined: int) -> list[StoredValue]:
        values = []
        for field, radix in zip(self.fields, self._radix.tolist(), strict=True):
            values.append(field.stored[combined // radix % len(field.labels)])
        self._rows[combined] = values
        return values

    def labelled(self, values: Sequence[StoredValue] | None) -> list[tuple[str, str]]:
        """(slice, value label) of each field for one stored prediction; none for a record
        stored without slice values, or with another number of them (another spec)."""
        if values is None or len(values) != len(self.fields):
            return []
        return [
            (field.name, field.labels[field.code_of(value)])
            for field, value in zip(self.fields, values, strict=True)
        ]


class SliceDrift:
    """Score counts per slice value in the reference's score bins, for one window."""

    def __init__(self, layout: SliceLayout, score_edges: Sequence[float | str]) -> None:
        self._edges = np.asarray(score_edges, dtype=np.float64)  # numbers (the profile's check)
        self.bins = len(self._edges) + 1
        sizes = [len(f.labels) for f in layout.fields]
        self._offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self.values = int(sum(sizes))  # slice values of every field, end to end
        #: (field, value label) of each row of ``count``'s result.
        self.rows = [(f.name, label) for f in layout.fields for label in f.labels]

    def empty(self) -> npt.NDArray[np.int64]:
        return np.zeros((self.values, self.bins), dtype=np.int64)

    def count(self, scores: npt.NDArray[np.float64], codes: Codes) -> npt.NDArray[np.int64]:
        """(slice values, score bins) counts of one batch: one ``searchsorted``, one
        ``bincount``."""
        score_bin = np.searchsorted(self._edges, scores, side="right")
        flat = (codes + self._offsets) * self.bins + score_bin[:, None]
        return np.bincount(flat.ravel(), minlength=self.values * self.bins).reshape(
            self.values, self.bins
        )


class SliceGauges:
    """``streamscore_slice_score_psi``: set for values with a PSI, removed for the others
    (a value too rare in this window must not show the PSI of an older one)."""

    def __init__(self, metrics: Metrics, pipeline: str) -> None:
        self._gauge = metrics.slice_score_psi
        self._pipeline = pipeline

    def set(self, model: str, rows: Sequence[tuple[str, str]], values: Sequence[float]) -> None:
        for (field, label), value in zip(rows, values, strict=True):
            if np.isnan(value):
                self.remove(model, [(field, label)])
            else:
                self._gauge.labels(self._pipeline, model, field, label).set(value)

    def remove(self, model: str, rows: Sequence[tuple[str, str]]) -> None:
        for field, label in rows:
            with contextlib.suppress(KeyError):
                self._gauge.remove(self._pipeline, model, field, label)
