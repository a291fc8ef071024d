"""ONNX scoring: one InferenceSession per model version, one ``session.run`` per batch.

The session is tuned for a 2-core worker that already runs the consumer loop and the
feature reads (see PLATFORM.md): one intra-op and one inter-op thread, sequential
execution and no spinning, so scoring never competes with the event loop for a core.
Training builds its parity check on this same class, so what was verified offline is the
code path that serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.errors import ModelInputError, ScoringError
from models.manifest import Task
from models.registry import ModelVersion

Scores = npt.NDArray[np.float64]
# skl2onnx's name for the class-probability matrix of a classifier (with zipmap off).
PROBABILITIES = "probabilities"


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxScorer:
    """Scores float32 input matrices with one model version.

    For a binary classifier the score is the positive class's probability (the last
    probability column, matching ``manifest.classes``); for a regressor, the prediction.
    """

    def __init__(
        self,
        onnx_bytes: bytes,
        *,
        name: str,
        version: int,
        input_columns: Sequence[str],
        task: Task,
    ) -> None:
        self.name = name
        self.version = version
        self.input_columns: tuple[str, ...] = tuple(input_columns)
        self.task: Task = task
        self.width = len(self.input_columns)
        try:
            self._session = ort.InferenceSession(
                onnx_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ScoringError(name, version, f"ONNX Runtime cannot load the model: {exc}") from exc
        self._input = self._check_input()
        self._output = self._check_output()

    @classmethod
    def from_version(cls, model: ModelVersion) -> OnnxScorer:
        """Load a registered version (its sha256 is checked again as the bytes are read)."""
        manifest = model.manifest
        return cls(
            model.read_onnx(),
            name=model.name,
            version=model.version,
            input_columns=manifest.input_columns,
            task=manifest.task,
        )

    def require_columns(self, columns: Sequence[str]) -> None:
        """Fail unless ``columns`` (e.g. ``spec.input_columns()``) is the model's input order.

        Width alone would accept two swapped columns; names catch that at start-up.
        """
        given = tuple(columns)
        if given == self.input_columns:
            return
        pairs = enumerate(zip(given, self.input_columns, strict=False))
        first = next((i for i, (a, b) in pairs if a != b), min(len(given), self.width))
        msg = (
            f"input columns differ from the model's at position {first}:"
            f" given {list(given)}, model expects {list(self.input_columns)}"
        )
        raise ModelInputError(self.name, self.version, msg)

    def score(self, matrix: npt.NDArray[Any]) -> Scores:
        """Scores of the rows of ``matrix`` (n, width) as float64 (n,); one run per call.

        The input is never written to: a float32 C-contiguous matrix is passed as is, other
        layouts are copied.
        """
        if matrix.ndim != 2 or matrix.shape[1] != self.width:
            msg = f"input has shape {matrix.shape}; expected (n, {self.width})"
            raise ModelInputError(self.name, self.version, msg)
        n = matrix.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float64)
        batch = np.ascontiguousarray(matrix, dtype=np.float32)
        try:
            (output,) = self._session.run([self._output], {self._input: batch})
        except Exception as exc:  # onnxruntime raises its own untyped errors
            msg = f"session.run failed on a batch of {n}: {exc}"
            raise ScoringError(self.name, self.version, msg) from exc
        values = np.asarray(output)
        scores = values[:, -1] if self.task == "classification" else values.reshape(-1)
        if scores.shape != (n,):
            msg = f"model returned {values.shape} for {n} rows"
            raise ScoringError(self.name, self.version, msg)
        scores = scores.astype(np.float64)
        if self.task == "classification":
            # float32 rounding yields e.g. 1.0000001; consumers (thresholds, log loss) need
            # a true probability.
            np.clip(scores, 0.0, 1.0, out=scores)
        return scores

    def _check_input(self) -> str:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            msg = f"model has {len(inputs)} inputs; expected one float matrix"
            raise ScoringError(self.name, self.version, msg)
        (node,) = inputs
        shape = list(node.shape)
        if node.type != "tensor(float)" or len(shape) != 2:
            msg = f"model input {node.name!r} is {node.type} {shape}; expected a float matrix"
            raise ScoringError(self.name, self.version, msg)
        if shape[1] != self.width:
            msg = (
                f"model input width is {shape[1]} but the manifest lists {self.width}"
                f" input columns {list(self.input_columns)}"
            )
            raise ModelInputError(self.name, self.version, msg)
        return str(node.name)

    def _check_output(self) -> str:
        outputs = {node.name: node for node in self._session.get_outputs()}
        if self.task == "classification":
            node = outputs.get(PROBABILITIES)
            if node is None or node.type != "tensor(float)" or len(node.shape) != 2:
                msg = (
                    f"classifier has no float {PROBABILITIES!r} matrix output (outputs:"
                    f" {sorted(outputs)}); convert with zipmap disabled"
                )
                raise ScoringError(self.name, self.version, msg)
            if node.shape[1] not in (2, None) and not isinstance(node.shape[1], str):
                msg = f"classifier has {node.shape[1]} probability columns; expected 2"
                raise ScoringError(self.name, self.version, msg)
            return PROBABILITIES
        if len(outputs) != 1:
            msg = f"regressor has outputs {sorted(outputs)}; expected exactly one"
            raise ScoringError(self.name, self.version, msg)
        return str(next(iter(outputs)))
