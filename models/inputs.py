"""The model input layout: event fields and feature values -> one float32 matrix.

Training and serving build their vectors with the same ``InputLayout``, so a model never
sees columns in a different order or encoding from the one it was fitted on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.spec import PipelineSpec

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class _Numeric:
    column: int
    field: str
    default: float


@dataclass(frozen=True)
class _OneHot:
    first_column: int
    field: str
    offsets: Mapping[str, int]


@dataclass(frozen=True)
class _Feature:
    column: int
    ref_index: int


class InputLayout:
    """Builds the ordered model input matrix declared by ``spec.model_input``.

    ``build`` takes events (already validated, so categories are known and required fields
    present) and the batch's feature matrix, whose columns follow ``spec.features.refs``.
    """

    def __init__(self, spec: PipelineSpec) -> None:
        self.columns = spec.input_columns()
        self.width = len(self.columns)
        self._numeric: list[_Numeric] = []
        self._one_hot: list[_OneHot] = []
        self._features: list[_Feature] = []
        refs = self._refs = list(spec.features.refs)
        column = 0
        for entry in spec.model_input:
            if entry.feature is not None:
                self._features.append(_Feature(column, refs.index(entry.feature)))
                column += 1
                continue
            declared = spec.event.fields[entry.event or ""]
            if entry.encode == "one_hot":
                values = declared.values or ()
                offsets = {value: i for i, value in enumerate(values)}
                self._one_hot.append(_OneHot(column, entry.event or "", offsets))
                column += len(values)
            else:
                default = float(declared.default) if declared.default is not None else 0.0
                self._numeric.append(_Numeric(column, entry.event or "", default))
                column += 1

    @property
    def feature_positions(self) -> dict[str, int]:
        """Each feature ref of the model input -> its column in the matrix: one column, the
        value as read (features are numeric and never encoded)."""
        return {self._refs[f.ref_index]: f.column for f in self._features}

    def build(self, events: Sequence[Mapping[str, Any]], features: npt.NDArray[Any]) -> Matrix:
        n = len(events)
        matrix = np.zeros((n, self.width), dtype=np.float32)
        for numeric in self._numeric:
            name, default = numeric.field, numeric.default
            matrix[:, numeric.column] = [
                default if (v := event.get(name)) is None else v for event in events
            ]
        for one_hot in self._one_hot:
            name, offsets = one_hot.field, one_hot.offsets
            hot = [offsets.get(event.get(name), -1) for event in events]  # type: ignore[arg-type]
            rows = np.arange(n)
            cols = np.asarray(hot, dtype=np.int64)
            known = cols >= 0  # an unknown category encodes as all zeros
            matrix[rows[known], one_hot.first_column + cols[known]] = 1.0
        for feature in self._features:
            matrix[:, feature.column] = features[:, feature.ref_index]
        return matrix
