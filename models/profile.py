"""The reference profile of a model version: what its inputs and scores looked like in training.

``streamscore train`` stores one beside each version (``reference_profile.json``, named and
hashed in the manifest): per model input column, the training rows' share in each bin, and
the share of the model's held-out scores in each bin. The scoring worker counts the same
bins over a window of served events and compares the two distributions (population
stability index, ``streams/monitoring/drift.py``).

A numeric column's bins come from the training data's deciles: 9 inner edges (fewer when
values repeat), open outer bins, so every value falls in exactly one bin; bin ``i`` holds
``edges[i-1] <= x < edges[i]``. A one-hot group (``{event: f, encode: one_hot}``) is one
categorical column: a bin per declared value plus bin 0 for a row with none of them set.

Counting is one vectorised pass over a batch's matrix (``ProfileBins.count``: a
``searchsorted`` per numeric column, one matrix product for the one-hot groups, one
``bincount``; nothing per row in Python); training
counts its reference shares with that same code, so serving bins exactly as training did.
The profile is JSON (pydantic), never a pickle: a registry folder is user-writable.

>>> import numpy as np
>>> columns = ("x", "c=a", "c=b")
>>> matrix = np.array([[0.5, 1, 0], [1.5, 0, 1], [2.5, 0, 1], [3.5, 0, 0]], np.float32)
>>> groups = [ColumnGroup("x", "numeric", ("x",)), ColumnGroup("c", "category", ("c=a", "c=b"))]
>>> profile = build_profile(columns, groups, matrix, np.array([0.1, 0.2, 0.3, 0.4]), bins=2)
>>> [(c.name, c.edges, c.shares) for c in profile.columns]
[('x', [2.0], [0.5, 0.5]), ('c', ['(none)', 'a', 'b'], [0.25, 0.25, 0.5])]
>>> ProfileBins(profile, columns).count(matrix, np.array([0.1, 0.1, 0.1, 0.1])).tolist()
[2, 2, 1, 1, 2, 4, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.spec import PipelineSpec, feature_column

PROFILE_FILE = "reference_profile.json"
#: Quantile bins per numeric column and for the score (deciles).
PROFILE_BINS = 10
#: The bin of a one-hot group's row with no category set (an unknown value encodes so).
NO_CATEGORY = "(none)"

Kind = Literal["numeric", "category"]
Counts = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ColumnGroup:
    """One drift column: a numeric input column, or the columns of one one-hot group."""

    name: str
    kind: Kind
    columns: tuple[str, ...]


def column_groups(spec: PipelineSpec) -> list[ColumnGroup]:
    """The spec's model input as drift columns, in ``model_input`` order."""
    groups: list[ColumnGroup] = []
    for entry in spec.model_input:
        if entry.feature is not None:
            name = feature_column(entry.feature)
            groups.append(ColumnGroup(name, "numeric", (name,)))
        elif entry.encode == "one_hot":
            field = entry.event or ""
            values = spec.event.fields[field].values or ()
            groups.append(ColumnGroup(field, "category", tuple(f"{field}={v}" for v in values)))
        else:
            name = entry.event or ""
            groups.append(ColumnGroup(name, "numeric", (name,)))
    return groups


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    """Bins and the reference's share in each (shares sum to 1).

    ``edges`` are a numeric column's inner bin edges (``len(shares) == len(edges) + 1``) or
    a categorical column's bin names (``len(shares) == len(edges)``, ``(none)`` first).
    """

    edges: list[float] | list[str]
    shares: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        if any(share < 0 for share in self.shares) or abs(sum(self.shares) - 1) > 1e-6:
            msg = f"shares must be >= 0 and sum to 1, got {self.shares}"
            raise ValueError(msg)
        return self


class ColumnProfile(Distribution):
    name: str
    kind: Kind
    columns: tuple[str, ...] = Field(min_length=1, description="The input columns it covers.")

    @model_validator(mode="after")
    def _check_bins(self) -> ColumnProfile:
        numeric = self.kind == "numeric"
        if numeric and (len(self.columns) != 1 or any(isinstance(e, str) for e in self.edges)):
            msg = f"numeric column {self.name!r}: one input column and numeric edges"
            raise ValueError(msg)
        if numeric and list(self.edges) != sorted(self.edges):
            msg = f"numeric column {self.name!r}: edges {self.edges} are not sorted"
            raise ValueError(msg)
        bins = len(self.edges) + 1 if numeric else len(self.columns) + 1
        if len(self.shares) != bins or (not numeric and len(self.edges) != bins):
            msg = f"column {self.name!r}: {len(self.shares)} shares for {bins} bins"
            raise ValueError(msg)
        return self


class ReferenceProfile(_Strict):
    """Format 1: input columns' and held-out scores' distributions at training."""

    format: Literal[1] = 1
    input_columns: tuple[str, ...] = Field(min_length=1)
    rows: int = Field(ge=1, description="Training rows the columns' shares come from.")
    columns: tuple[ColumnProfile, ...] = Field(min_length=1)
    score_rows: int = Field(ge=1, description="Held-out rows the score's shares come from.")
    score: Distribution

    @model_validator(mode="after")
    def _check(self) -> ReferenceProfile:
        names = [column.name for column in self.columns]
        if len(set(names)) != len(names):
            msg = f"column names repeat: {names}"
            raise ValueError(msg)
        unknown = {c for column in self.columns for c in column.columns} - set(self.input_columns)
        if unknown:
            msg = f"columns {sorted(unknown)} are not input columns"
            raise ValueError(msg)
        if any(isinstance(e, str) for e in self.score.edges):
            msg = "score edges must be numbers"
            raise ValueError(msg)
        return self


def quantile_edges(values: npt.NDArray[np.floating], bins: int = PROFILE_BINS) -> list[float]:
    """Inner edges at the ``bins``-quantiles of ``values``, repeated ones merged."""
    inner = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1])
    return [float(edge) for edge in np.unique(inner)]


def build_profile(
    input_columns: Sequence[str],
    groups: Sequence[ColumnGroup],
    train: npt.NDArray[np.float32],
    holdout_scores: npt.NDArray[np.float64],
    bins: int = PROFILE_BINS,
) -> ReferenceProfile:
    """The profile of ``train`` (the training rows of the model input matrix) and of the
    model's scores on the held-out rows."""
    index = {name: i for i, name in enumerate(input_columns)}
    columns: list[dict[str, Any]] = []
    for group in groups:
        if group.kind == "numeric":
            edges: list[float] | list[str] = quantile_edges(train[:, index[group.columns[0]]], bins)
            size = len(edges) + 1
        else:
            edges = [NO_CATEGORY, *(c.split("=", 1)[1] for c in group.columns)]
            size = len(edges)
        columns.append(
            {"name": group.name, "kind": group.kind, "columns": group.columns, "edges": edges,
             "shares": _uniform(size)}
        )  # fmt: skip
    score_edges = quantile_edges(holdout_scores, bins)
    draft = {
        "input_columns": tuple(input_columns),
        "rows": len(train),
        "columns": columns,
        "score_rows": len(holdout_scores),
        "score": {"edges": score_edges, "shares": _uniform(len(score_edges) + 1)},
    }
    # The shares are counted by the code serving counts with: the same bins, the same ties.
    binning = ProfileBins(ReferenceProfile.model_validate(draft), input_columns)
    counts = binning.count(train, np.zeros(0)) + binning.count(train[:0], holdout_scores)
    for column, (start, end) in zip(columns, binning.segments, strict=False):
        column["shares"] = _shares(counts[start:end])
    start, end = binning.segments[-1]
    draft["score"] = {"edges": score_edges, "shares": _shares(counts[start:end])}
    return ReferenceProfile.model_validate(draft)


def _uniform(size: int) -> list[float]:
    return [1.0 / size] * size


def _shares(counts: Counts) -> list[float]:
    total = int(counts.sum())
    return [float(c) / total for c in counts.tolist()] if total else [0.0] * len(counts)


class ProfileBins:
    """A profile's bins compiled against a model input layout: ``count`` bins one batch.

    Every column's (and the score's) bins are laid end to end in one counts vector;
    ``segments[i]`` is the (start, end) of column ``i`` (in profile order, contiguous), the
    score's is last; ``reference`` holds the reference shares in the same layout. Raises
    ``ValueError`` when the profile names a column ``input_columns`` lacks.
    """

    def __init__(self, profile: ReferenceProfile, input_columns: Sequence[str]) -> None:
        index = {name: i for i, name in enumerate(input_columns)}
        missing = sorted({c for column in profile.columns for c in column.columns} - index.keys())
        if missing:
            msg = f"the reference profile's columns {missing} are not model input columns"
            raise ValueError(msg)
        self.profile = profile
        numeric = [c for c in profile.columns if c.kind == "numeric"]
        category = [c for c in profile.columns if c.kind == "category"]
        self._numeric_at = [index[c.columns[0]] for c in numeric]
        numeric_edges = [np.asarray(c.edges, dtype=np.float64) for c in numeric]
        # Every numeric column's edges in one (columns, edges) array, padded with NaN (no
        # value is >= NaN): rows are binned a few calls per edge rank, not per column.
        widest = max((len(e) for e in numeric_edges), default=0)
        table = np.full((len(numeric), widest), np.nan)
        for j, edges in enumerate(numeric_edges):
            table[j, : len(edges)] = edges
        self._edges_by_rank = np.ascontiguousarray(table.T)  # (edges, columns)
        # matrix @ weights gives a group's category code: 1..k for the hot column, 0 for none.
        self._weights = np.zeros((len(input_columns), len(category)), dtype=np.float32)
        for j, column in enumerate(category):
            for k, name in enumerate(column.columns, start=1):
                self._weights[index[name], j] = k
        self._score_edges = np.asarray(profile.score.edges, dtype=np.float64)
        # Each column's bins start where the previous column's end, in profile order.
        sizes = {c.name: len(c.shares) for c in profile.columns}
        offsets = np.cumsum([0] + list(sizes.values())).tolist()
        starts = dict(zip(sizes, offsets, strict=False))
        self.segments = [(starts[c.name], starts[c.name] + sizes[c.name]) for c in profile.columns]
        score_start = sum(sizes.values())
        self.segments.append((score_start, score_start + len(profile.score.shares)))
        self.size = self.segments[-1][1]
        self._numeric_offsets = np.array([starts[c.name] for c in numeric], dtype=np.int64)
        self._category_offsets = np.array([starts[c.name] for c in category], dtype=np.int64)
        self._score_offset = score_start
        self.reference = np.concatenate(
            [np.asarray(c.shares) for c in profile.columns] + [np.asarray(profile.score.shares)]
        )

    def count(self, matrix: npt.NDArray[np.float32], scores: npt.NDArray[np.float64]) -> Counts:
        """Counts per bin of every column over ``matrix`` (n rows) and of ``scores``
        (any length; empty to count columns only), in one pass each, no Python per row."""
        n = matrix.shape[0]
        codes: list[npt.NDArray[np.int64]] = []
        if n and self._numeric_at:
            # Bin = number of edges <= value (searchsorted's side="right"), every column at
            # once: one comparison per edge rank (the k-th edge of every column), fewer calls
            # than one per column and half the time of one (rows, columns, edges) comparison
            # at the thousand rows the monitors count at a time. (A model input is never
            # NaN: JSON has none, and a missing feature takes the spec's default.)
            values = matrix[:, self._numeric_at].astype(np.float64)
            bins = np.zeros(values.shape, dtype=np.int64)
            for edges in self._edges_by_rank:
                bins += values >= edges
            codes.append((bins + self._numeric_offsets).ravel())
        if n and self._weights.shape[1]:
            hot = (matrix @ self._weights).astype(np.int64)
            codes.append((hot + self._category_offsets).ravel())
        if len(scores):
            codes.append(
                np.searchsorted(self._score_edges, scores, side="right") + self._score_offset
            )
        if not codes:
            return np.zeros(self.size, dtype=np.int64)
        return np.bincount(np.concatenate(codes), minlength=self.size).astype(np.int64)
