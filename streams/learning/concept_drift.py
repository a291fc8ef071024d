"""Concept drift from labels: an adaptive window (River's ADWIN) on each model's errors.

The learner hands every model's errors on a batch of labels (``errors``: 0/1 for a
classifier, wrong at the spec's threshold; the absolute error for a regressor) to that
model's detector. ADWIN keeps the errors since the last change it found and reports a change
when two parts of that window have means too far apart for one distribution (significance
``monitoring.performance.adwin_delta``). Each change is a ``Change``: the window's mean
before, that of its recent part after; ``worse`` when the errors went up. A model the
online learner is still learning gets *better*: counted apart, never alerted on.

River (0.26) keeps ADWIN's buckets in Rust and exports nothing of them (no state, no
pickle; and the learner unpickles nothing from Redis anyway). So the checkpoint keeps, per
model, the errors since its last change, the newest ``error_history`` of them (JSON: a
base64 of little-endian float32), and a restarted learner rebuilds each ADWIN by replaying
them (changes found during the replay are not counted again). River's ADWIN starts afresh
on the value after a change, so while a model has had fewer errors than ``error_history``
since its last change the rebuilt detector is the same one (errors are rounded to float32
before ADWIN sees them, so the replay is exact); past that, its window is the newest
``error_history`` errors: a change against older labels than those goes unseen.

>>> import numpy as np
>>> drift = ConceptDrift(delta=0.002, history=1000)
>>> rng = np.random.default_rng(0)
>>> drift.update("m", (rng.random(2000) < 0.1).astype(np.float32))  # 10% wrong: steady
[]
>>> [change.worse for change in drift.update("m", (rng.random(500) < 0.5).astype(np.float32))]
[True]
>>> restored = ConceptDrift.from_data(drift.to_data(), delta=0.002, history=1000)
>>> restored.error_mean("m") == drift.error_mean("m")
True
"""

from __future__ import annotations

import base64
import binascii
import collections
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from river import drift as river_drift

from streams.errors import StreamscoreError

_FORMAT = 1


class ConceptDriftStateError(StreamscoreError):
    """Stored detector state cannot be restored (not ours, another format, damaged)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"stored concept-drift state: {detail}")


def errors_of(
    scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float | None
) -> npt.NDArray[np.float32]:
    """A model's errors on a batch: wrong at ``threshold`` (0 or 1) for a classifier, the
    absolute error for a regressor (``threshold`` None); float32, as ADWIN sees them.

    >>> errors_of([0.9, 0.2, 0.6], [1, 1, 0], 0.5).tolist()
    [0.0, 1.0, 1.0]
    >>> errors_of([10.0, 12.5], [11.0, 12.0], None).tolist()
    [1.0, 0.5]
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if threshold is None:
        wrong = np.abs(s - y)
    else:
        wrong = ((s >= threshold) != (y > 0.5)).astype(np.float64)
    return wrong.astype(np.float32)


@dataclass(frozen=True)
class Change:
    model: str
    before: float  # mean error of the older part of its window ADWIN dropped
    after: float  # mean error of the recent part it kept

    @property
    def worse(self) -> bool:
        return self.after > self.before


class _Detector:
    def __init__(self, delta: float, history: int) -> None:
        # Any: River's drift detectors are untyped (0.26).
        self.adwin: Any = river_drift.ADWIN(delta=delta)  # type: ignore[no-untyped-call]
        self.history = history
        # The errors since the last change, as the batches' arrays (the newest ``history``
        # and at most one array more: cheap to keep and to write out with every checkpoint).
        self.chunks: collections.deque[npt.NDArray[np.float32]] = collections.deque()
        self.held = 0

    def errors(self) -> npt.NDArray[np.float32]:
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self.chunks)[-self.history :]

    def keep(self, errors: npt.NDArray[np.float32]) -> None:
        if len(errors):
            self.chunks.append(errors)
            self.held += len(errors)
        while self.chunks and self.held - len(self.chunks[0]) >= self.history:
            self.held -= len(self.chunks.popleft())

    def update(self, model: str, errors: npt.NDArray[np.float32]) -> list[Change]:
        batch: list[float] = errors.tolist()
        adwin = self.adwin
        changes: list[Change] = []
        # ADWIN's window before this batch: every value since its last change (it shrinks
        # only when it finds one; River restarts it on the value after that).
        width, total = (0, 0.0) if adwin.drift_detected else (adwin.width, adwin.total)
        since = 0  # the batch's first error after the last change in it
        for i, error in enumerate(batch):  # ADWIN takes one value at a time
            adwin.update(error)
            if adwin.drift_detected:
                width += i + 1 - since
                total += math.fsum(batch[since : i + 1])
                dropped = max(width - adwin.width, 1)
                before = (total - adwin.total) / dropped
                changes.append(Change(model, before, float(adwin.estimation)))
                self.chunks.clear()
                self.held = 0
                width, total, since = 0, 0.0, i + 1
        self.keep(errors[since:])
        return changes


class ConceptDrift:
    """One ADWIN per model, on the errors of its published scores."""

    def __init__(self, delta: float, history: int) -> None:
        self.delta = delta
        self.history = history
        self._detectors: dict[str, _Detector] = {}

    @property
    def models(self) -> list[str]:
        return sorted(self._detectors)

    def update(self, model: str, batch: npt.NDArray[np.float32]) -> list[Change]:
        """Feed ``model``'s errors on a batch of labels, in order; the changes found."""
        detector = self._detectors.get(model)
        if detector is None:
            detector = self._detectors[model] = _Detector(self.delta, self.history)
        return detector.update(model, np.array(batch, dtype=np.float32))  # a copy: kept

    def error_mean(self, model: str) -> float | None:
        """Mean error in ``model``'s current window (since its last change); None before any."""
        detector = self._detectors.get(model)
        if detector is None or detector.adwin.width == 0:
            return None
        return float(detector.adwin.estimation)

    def to_data(self) -> dict[str, Any]:
        """JSON-able: the errors each detector is rebuilt from."""
        models = {
            model: base64.b64encode(d.errors().astype("<f4").tobytes()).decode()
            for model, d in sorted(self._detectors.items())
        }
        return {"format": _FORMAT, "errors": models}

    @classmethod
    def from_data(
        cls, data: Any, delta: float, history: int, models: Collection[str] | None = None
    ) -> ConceptDrift:
        """Rebuild from ``to_data`` by replaying each model's errors (read as numbers only;
        raises ``ConceptDriftStateError`` on anything else). With ``models``, only theirs:
        a model the spec no longer has is dropped."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            msg = f"not format {_FORMAT}"
            raise ConceptDriftStateError(msg)
        stored = data.get("errors")
        if not isinstance(stored, dict):
            msg = "'errors' is not an object"
            raise ConceptDriftStateError(msg)
        restored = cls(delta, history)
        for model, text in stored.items():
            if models is not None and model not in models:
                continue
            if not isinstance(text, str):
                msg = f"errors of model {model!r} are not a string"
                raise ConceptDriftStateError(msg)
            try:
                raw = base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                msg = f"errors of model {model!r} are not base64"
                raise ConceptDriftStateError(msg) from exc
            if len(raw) % 4:
                msg = f"errors of model {model!r}: {len(raw)} bytes, not float32s"
                raise ConceptDriftStateError(msg)
            values = np.frombuffer(raw, dtype="<f4")
            if not np.isfinite(values).all() or (values < 0).any():
                msg = f"errors of model {model!r} are not all finite and at least 0"
                raise ConceptDriftStateError(msg)
            # The newest ``history`` (the spec's may have shrunk); changes not counted again.
            restored.update(model, values[-history:].astype(np.float32))
        return restored
