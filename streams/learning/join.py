"""The label join: delayed labels -> what was predicted for the same event.

The labels consumer (``streams.learning.label_consumer``, one owner per pipeline) joins each batch
it takes: one prediction-store read per batch, then each label is one of

- ``joined``: handed, with the stored vector and every model's score, to the learner
  (``streams.learning.learner``) in the same process;
- ``late``: arrived after the label window; handed on only under ``late_policy: learn``;
- ``orphan``: no stored prediction (never predicted, or expired past the grace period);
- ``invalid``: not a label record (or one past ``streams.scoring.limits``: too large, an empty or
  oversize event id, a ``label_time`` outside 1970..9999 UTC), or a label that does not fit
  the pipeline's task (classification: 0, 1, true or false; regression: a finite number):
  dead-lettered with stage ``label``.

With the spec's privacy hashing event ids, a label's event id is hashed the same way
before the join, so it finds its prediction; the id is then never quoted in a dead letter.

Duplicates are recognised by the learner (it remembers what it learned, atomically with its
checkpoint), so a replayed labels topic never learns twice.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from models.manifest import Task
from streams.errors import BadInput
from streams.metrics import Metrics
from streams.runtime.retrying import REDIS_TRANSIENT, within_budget
from streams.scoring.limits import TIME_RANGE_TEXT, InputLimits, time_in_range
from streams.scoring.prediction_store import PredictionStore
from streams.scoring.privacy import NO_PRIVACY, Privacy
from streams.scoring.records import InputMessage, OutputRecord, dead_letter_key, encode_dead_letter
from streams.scoring.validation import parse_timestamp
from streams.spec import PipelineSpec

STAGE = "label"
_LIMITS = InputLimits()  # the default limits


@dataclass(frozen=True, slots=True)
class Label:
    event_id: str
    label: int | float  # classification: 0 or 1; regression: a finite float
    label_time: float


def parse_label(
    raw: bytes | None,
    fallback_time: float,
    limits: InputLimits = _LIMITS,
    *,
    show_id: bool = True,
    task: Task = "classification",
) -> Label:
    """``{"event_id": str|int, "label": ..., "label_time": ISO 8601 | epoch ms}``, where
    ``label`` is 0, 1, true or false for a classification pipeline (an int 0/1 then) and a
    finite number for a regression one (a float then). An error quotes no event id unless
    ``show_id``."""
    limits.check_value(STAGE, raw)
    try:
        document = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise BadInput(STAGE, "not_json", f"not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadInput(STAGE, "not_an_object", "a label is a JSON object")
    event_id = document.get("event_id")
    if isinstance(event_id, bool) or not isinstance(event_id, str | int):
        raise BadInput(STAGE, "missing_field", "'event_id' (string or int) is required")
    limits.check_id(STAGE, "'event_id'", str(event_id), show=show_id)
    value = _label_value(document.get("label"), task)
    label_time = fallback_time
    if document.get("label_time") is not None:
        try:
            label_time = parse_timestamp(document["label_time"])
        except (ValueError, TypeError, OverflowError) as exc:
            detail = f"'label_time' {document['label_time']!r} is not ISO 8601 or epoch ms"
            raise BadInput(STAGE, "bad_timestamp", detail) from exc
        if not time_in_range(label_time):
            detail = f"'label_time' {document['label_time']!r} is outside {TIME_RANGE_TEXT}"
            raise BadInput(STAGE, "out_of_range", detail)
    return Label(str(event_id), value, label_time)


def _label_value(value: object, task: Task) -> int | float:
    if task == "classification":
        if value not in (0, 1):  # True/False compare equal to 1/0
            detail = f"'label' must be 0, 1, true or false (classification), got {value!r:.80}"
            raise BadInput(STAGE, "wrong_type", detail)
        return 1 if value else 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        detail = f"'label' must be a number (regression), got {value!r:.80}"
        raise BadInput(STAGE, "wrong_type", detail)
    try:
        target = float(value)
    except OverflowError:  # an int past the float range
        target = math.inf
    if not math.isfinite(target):
        detail = f"'label' {value!r:.80} is not a finite number (regression)"
        raise BadInput(STAGE, "out_of_range", detail)
    return target


def joined_record(
    label: Label,
    predicted_at: float,
    late: bool,
    vector: npt.NDArray[np.float32],
    scores: dict[str, float],
    versions: dict[str, int] | None = None,
    *,
    primary: str = "",
    primary_version: int = 0,
    entity_key: str | int | None = None,
    event_time: float | None = None,
    slices: tuple[str | bool | None, ...] | None = None,
) -> dict[str, Any]:
    """A label with what was predicted for its event, as the learner takes it (and the
    labelled log keeps it: ``streams.learning.labelled``); ``versions`` names the version
    behind each score (where known); the entity key and event time are for the skew check
    (None unless monitoring.skew is on); ``slices`` are the event's monitoring.slices
    values, when stored with the prediction."""
    return {
        "event_id": label.event_id,
        "label": label.label,
        "label_time": label.label_time,
        "predicted_at": predicted_at,
        "late": late,
        "vector": vector,
        "scores": scores,
        "primary": primary,  # the model that served, and its version
        "primary_version": primary_version,
        "versions": versions or {},
        "entity_key": entity_key,
        "event_time": event_time,
        "slices": slices,
    }


@dataclass
class JoinOutcome:
    joined: list[dict[str, Any]] = field(default_factory=list)  # for the learner, in order
    dead_letters: list[OutputRecord] = field(default_factory=list)
    held: list[InputMessage] = field(default_factory=list)  # no prediction yet: try again
    counts: dict[str, int] = field(default_factory=dict)


class LabelJoiner:
    def __init__(
        self,
        spec: PipelineSpec,
        store: PredictionStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        limits: InputLimits | None = None,
        retry_for_seconds: float = 60.0,
        privacy: Privacy = NO_PRIVACY,
    ) -> None:
        if spec.labels is None:
            msg = f"pipeline {spec.name}: a label joiner needs 'labels' in the spec"
            raise ValueError(msg)
        self.spec = spec
        self.labels = spec.labels
        self.store = store
        self.clock = clock
        self.limits = limits if limits is not None else _LIMITS
        self.retry_for_seconds = retry_for_seconds  # a Redis outage shorter than this: waited
        self.privacy = privacy
        self.shadow_models = [s.name for s in spec.shadows] + (
            [spec.online.name] if spec.online else []
        )
        if spec.challenger_shadow is not None:  # scored while the alias is set, like a shadow
            self.shadow_models.append(spec.challenger_shadow)
        self.metrics = metrics
        self._m_labels = metrics.labels
        self._m_retries = metrics.redis_retries.labels(spec.name, STAGE)
        self._m_dead = metrics.dead_letters
        self._m_delay = metrics.label_delay_seconds.labels(spec.name)

    async def join(
        self,
        messages: Sequence[InputMessage],
        hold: Callable[[InputMessage], bool] | None = None,
    ) -> JoinOutcome:
        """Join ``messages``; one whose label finds no prediction is an orphan, unless
        ``hold`` says to try it again later: it is then returned in ``held``, uncounted."""
        out = JoinOutcome()
        labels: list[Label] = []
        sources: list[InputMessage] = []
        privacy = self.privacy
        show_id = not privacy.hashes_id
        task = self.spec.task
        for message in messages:
            try:
                self.limits.check_key(STAGE, message.key)
                label = parse_label(
                    message.value, message.timestamp, self.limits, show_id=show_id, task=task
                )
            except BadInput as bad:
                out.dead_letters.append(self._dead_letter(message, bad))
                continue
            if privacy.hashes_id:  # as the event's id was hashed: the join still finds it
                label = dataclasses.replace(label, event_id=privacy.event_id(label.event_id))
            labels.append(label)
            sources.append(message)
        ids = [label.event_id for label in labels]
        stored = await within_budget(
            lambda: self.store.get(ids, self.shadow_models),
            seconds=self.retry_for_seconds,
            what=f"{STAGE}: prediction-store read",
            transient=REDIS_TRANSIENT,
            on_retry=self._m_retries.inc,
        )
        now = self.clock()
        counts = {"joined": 0, "late": 0, "orphan": 0, "invalid": len(out.dead_letters)}
        window = self.labels.window_seconds
        for label, message, prediction in zip(labels, sources, stored, strict=True):
            if prediction is None:
                if hold is not None and hold(message):
                    out.held.append(message)
                else:
                    counts["orphan"] += 1
                continue
            delay = now - prediction.predicted_at
            self._m_delay.observe(max(delay, 0.0))
            late = delay > window
            counts["late" if late else "joined"] += 1
            if late and self.labels.late_policy == "drop":
                continue
            out.joined.append(
                joined_record(
                    label,
                    prediction.predicted_at,
                    late,
                    prediction.vector,
                    prediction.scores,
                    prediction.versions,
                    primary=prediction.primary,
                    primary_version=prediction.primary_version,
                    entity_key=prediction.entity_key,
                    event_time=prediction.event_time,
                    slices=prediction.slices,
                )
            )
        if out.joined:  # before they are learned: a shadow never sees fewer than in flight
            await within_budget(
                lambda: self.store.count_forwarded(len(out.joined)),
                seconds=self.retry_for_seconds,
                what=f"{STAGE}: taken-labels count",
                transient=REDIS_TRANSIENT,
            )
        for outcome, count in counts.items():
            if count:
                self._m_labels.labels(self.spec.name, outcome).inc(count)
        out.counts = counts
        return out

    def _dead_letter(self, message: InputMessage, bad: BadInput) -> OutputRecord:
        self._m_dead.labels(self.spec.name, bad.stage, bad.reason).inc()
        keep = self.privacy.keep_dead_letter_originals
        value = encode_dead_letter(
            message, pipeline=self.spec.name, stage=bad.stage, reason=bad.reason,
            error=bad.detail, at=self.clock(), keep_original=keep,
        )  # fmt: skip
        key = dead_letter_key(message.key, keep_original=keep)
        return OutputRecord(self.spec.output.dead_letter_topic, key, value)
