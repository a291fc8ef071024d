"""Every model's rolling evaluation per slice value (the spec's ``monitoring.slices``).

The learner evaluates each joined label once overall (``models.evaluation``) and once more
in the evaluation of each of its event's slice values, which the scoring worker stored with
the prediction (``streams.scoring.prediction_store``). Each slice value has its own window
of the same size, so ``accuracy`` of ``channel=online`` is over the last labelled online
events, however rare they are. A prediction stored without slice values (before the spec
had them) counts in the overall evaluation only.

Checkpointed with the learner's other state, atomically, as JSON: a Redis hash with one
field per slice value (``["channel", "online"]``) holding that value's
``RollingEvaluation`` (never a pickle). A checkpoint rewrites only the values its batch
touched (a full window is ~15 KB per model, and a slice field of 8 categories would
otherwise rewrite all of them with every small batch), or, after a fresh start, replaces
the whole hash.

>>> from streams.spec import EventSpec, FieldSpec
>>> fields = {"id": FieldSpec(type="string"), "new": FieldSpec(type="bool")}
>>> layout = SliceLayout.compile(EventSpec(id_field="id", fields=fields), ["new"])
>>> sliced = SlicedEvaluation(layout)
>>> for evaluation in sliced.of((True,)):
...     evaluation.update("m", 0.9, 1)
>>> sliced.snapshot()[("new", "true")]["m"]["accuracy"]
1.0
>>> replace, touched = sliced.touched()  # [hash field, evaluation, ...] to checkpoint
>>> replace, touched[0], sliced.touched()
(True, b'["new","true"]', (False, []))
>>> restored = SlicedEvaluation.restore({touched[0]: touched[1]}, layout)
>>> restored.snapshot() == sliced.snapshot()
True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import orjson

from models.evaluation import EvaluationStateError, RollingEvaluation
from models.manifest import Task
from streams.monitoring.slices import SliceLayout, StoredValue

log = logging.getLogger(__name__)

_WINDOW = RollingEvaluation().window  # the learner's overall evaluation window
Key = tuple[str, str]  # (slice field, value label)


class SlicedEvaluation:
    """(slice field, value label) -> every model's ``RollingEvaluation`` on its events."""

    def __init__(
        self, layout: SliceLayout, task: Task = "classification", window: int = _WINDOW
    ) -> None:
        self.layout = layout
        self.task: Task = task
        self.window = window
        self._known = {(f.name, label) for f in layout.fields for label in f.labels}
        self._evaluations: dict[Key, RollingEvaluation] = {}
        self._touched: set[Key] = set()
        #: The next checkpoint replaces the stored hash (a fresh start, or a stored one that
        #: held values the spec no longer declares) instead of updating it.
        self.replace = True

    def of(self, values: Sequence[StoredValue] | None) -> list[RollingEvaluation]:
        """The evaluations one labelled event counts in: one per slice field (none for an
        event stored without slice values)."""
        found = []
        for key in self.layout.labelled(values):
            evaluation = self._evaluations.get(key)
            if evaluation is None:
                evaluation = self._evaluations[key] = RollingEvaluation(self.window, self.task)
            self._touched.add(key)
            found.append(evaluation)
        return found

    def snapshot(self) -> dict[Key, dict[str, dict[str, float]]]:
        """Per (slice, value): per model, as ``RollingEvaluation.snapshot``."""
        return {key: self._evaluations[key].snapshot() for key in sorted(self._evaluations)}

    def touched(self) -> tuple[bool, list[bytes]]:
        """For the checkpoint: whether to replace the stored hash, and the hash fields and
        evaluations (flat: field, evaluation, ...) of the slice values updated since the
        last call (of every one when replacing)."""
        replace, self.replace = self.replace, False
        keys = sorted(self._evaluations if replace else self._touched)
        flat: list[bytes] = []
        for key in keys:
            flat += [orjson.dumps(list(key)), self._evaluations[key].to_bytes()]
        self._touched.clear()
        return replace, flat

    @classmethod
    def restore(
        cls, stored: Mapping[bytes, bytes], layout: SliceLayout, task: Task = "classification"
    ) -> SlicedEvaluation:
        """The evaluations of a checkpoint's hash. A value the spec no longer declares is
        left out; anything but ``touched``'s JSON raises ``EvaluationStateError``."""
        sliced = cls(layout, task)
        dropped = []
        for field, data in stored.items():
            try:
                key = orjson.loads(field)
            except orjson.JSONDecodeError as exc:
                msg = f"slice evaluations: hash field {field[:60]!r} is not JSON"
                raise EvaluationStateError(msg) from exc
            if not (isinstance(key, list) and len(key) == 2 and all(type(k) is str for k in key)):
                msg = f"slice evaluations: hash field {field[:60]!r} is not [slice, value]"
                raise EvaluationStateError(msg)
            if (key[0], key[1]) not in sliced._known:
                dropped.append("=".join(key))
                continue
            sliced._evaluations[(key[0], key[1])] = RollingEvaluation.from_bytes(data, task=task)
        sliced.replace = bool(dropped)
        if dropped:
            log.info(
                "slice evaluations of values the spec no longer declares left out: %s",
                ", ".join(sorted(dropped)[:10]),
            )
        return sliced

    def metrics(self) -> list[tuple[str, str, str, str, float]]:
        """(model, slice, value, metric, value) of every published figure (not ``count``)."""
        out: list[tuple[str, str, str, str, float]] = []
        for (field, label), models in self.snapshot().items():
            for model, values in models.items():
                out += [(model, field, label, m, v) for m, v in values.items() if m != "count"]
        return out


def restored(
    stored: Mapping[bytes, bytes], layout: SliceLayout, task: Task, pipeline: str
) -> SlicedEvaluation:
    """The checkpointed slice evaluations, or new ones (unreadable: logged)."""
    try:
        return SlicedEvaluation.restore(stored, layout, task)
    except EvaluationStateError as exc:
        log.warning("pipeline %s: starting new slice evaluations: %s", pipeline, exc)
    return SlicedEvaluation(layout, task)
