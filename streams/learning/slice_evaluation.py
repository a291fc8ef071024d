"""Every model's rolling evaluation per slice value (the spec's ``monitoring.slices``).

The learner evaluates each joined label once overall (``models.evaluation``) and once more
in the evaluation of each of its event's slice values, which the scoring worker stored with
the prediction (``streams.scoring.prediction_store``). Each slice value has its own window
of the same size, so ``accuracy`` of ``channel=online`` is over the last labelled online
events, however rare they are. A prediction stored without slice values (before the spec
had them) counts in the overall evaluation only.

Checkpointed with the learner's other state, atomically, as JSON: one
``RollingEvaluation`` document per slice value (never a pickle).

>>> from streams.spec import EventSpec, FieldSpec
>>> fields = {"id": FieldSpec(type="string"), "new": FieldSpec(type="bool")}
>>> layout = SliceLayout.compile(EventSpec(id_field="id", fields=fields), ["new"])
>>> sliced = SlicedEvaluation(layout)
>>> for evaluation in sliced.of((True,)):
...     evaluation.update("m", 0.9, 1)
>>> sliced.snapshot()[("new", "true")]["m"]["accuracy"]
1.0
>>> SlicedEvaluation.from_bytes(sliced.to_bytes(), layout).snapshot() == sliced.snapshot()
True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson

from models.evaluation import EvaluationStateError, RollingEvaluation
from models.manifest import Task
from streams.monitoring.slices import SliceLayout, StoredValue

log = logging.getLogger(__name__)

_FORMAT = 1
_WINDOW = RollingEvaluation().window  # the learner's overall evaluation window


class SlicedEvaluation:
    """(slice field, value label) -> every model's ``RollingEvaluation`` on its events."""

    def __init__(
        self, layout: SliceLayout, task: Task = "classification", window: int = _WINDOW
    ) -> None:
        self.layout = layout
        self.task: Task = task
        self.window = window
        self._known = {(f.name, label) for f in layout.fields for label in f.labels}
        self._evaluations: dict[tuple[str, str], RollingEvaluation] = {}

    def of(self, values: Sequence[StoredValue] | None) -> list[RollingEvaluation]:
        """The evaluations one labelled event counts in: one per slice field (none for an
        event stored without slice values)."""
        found = []
        for key in self.layout.labelled(values):
            evaluation = self._evaluations.get(key)
            if evaluation is None:
                evaluation = self._evaluations[key] = RollingEvaluation(self.window, self.task)
            found.append(evaluation)
        return found

    def snapshot(self) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
        """Per (slice, value): per model, as ``RollingEvaluation.snapshot``."""
        return {key: self._evaluations[key].snapshot() for key in sorted(self._evaluations)}

    def to_bytes(self) -> bytes:
        entries = [
            [field, value, orjson.Fragment(evaluation.to_bytes())]
            for (field, value), evaluation in sorted(self._evaluations.items())
        ]
        return orjson.dumps({"format": _FORMAT, "task": self.task, "slices": entries})

    @classmethod
    def from_bytes(
        cls, data: bytes, layout: SliceLayout, task: Task = "classification"
    ) -> SlicedEvaluation:
        """Restore ``to_bytes`` output; a slice value the spec no longer declares is left
        out. Anything else than this JSON raises ``EvaluationStateError``."""
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            msg = f"slice evaluations: not JSON ({exc})"
            raise EvaluationStateError(msg) from exc
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            msg = f"slice evaluations: not of format {_FORMAT}"
            raise EvaluationStateError(msg)
        entries = state.get("slices")
        if state.get("task") != task or not isinstance(entries, list):
            msg = f"slice evaluations: task {state.get('task')!r:.40} (the pipeline's is {task})"
            raise EvaluationStateError(msg)
        sliced = cls(layout, task)
        dropped = []
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 3):
                msg = f"slice evaluations: not a [slice, value, evaluation]: {entry!r:.80}"
                raise EvaluationStateError(msg)
            field, value, evaluation = entry
            if (field, value) not in sliced._known:
                dropped.append(f"{field}={value}")
                continue
            restored = RollingEvaluation.from_bytes(orjson.dumps(evaluation), task=task)
            sliced.window = restored.window
            sliced._evaluations[(field, value)] = restored
        if dropped:
            log.info("slice evaluations of values the spec no longer declares left out: %s",
                     ", ".join(dropped[:10]))  # fmt: skip
        return sliced

    def metrics(self) -> list[tuple[str, str, str, str, float]]:
        """(model, slice, value, metric, value) of every published figure (not ``count``)."""
        out: list[tuple[str, str, str, str, float]] = []
        for (field, label), models in self.snapshot().items():
            for model, values in models.items():
                out += [(model, field, label, m, v) for m, v in values.items() if m != "count"]
        return out


def restored(
    data: bytes | None, layout: SliceLayout, task: Task, pipeline: str
) -> SlicedEvaluation:
    """The checkpointed slice evaluations, or new ones (none yet, or unreadable: logged)."""
    if data is not None:
        try:
            return SlicedEvaluation.from_bytes(data, layout, task)
        except EvaluationStateError as exc:
            log.warning("pipeline %s: starting new slice evaluations: %s", pipeline, exc)
    return SlicedEvaluation(layout, task)
