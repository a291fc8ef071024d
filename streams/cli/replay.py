"""Dead-letter replay, the decision: which dead letters go back to their input topic.

After a fix (a spec that now accepts a new category, a larger size limit), the originals of
dead letters can be sent again. Each dead letter gets one outcome:

- ``replayed``: its original (key and value, as they came) goes back to the spec's input
  topic (stage ``decode`` or ``encode``) or labels topic (stage ``label``);
- ``still_invalid``: the *current* spec's validator (and the current size limits) rejects
  it again, so resending it would only dead-letter it again (``force`` resends it anyway);
- ``already_replayed``: an earlier replay (or this one) resent the same event (or label)
  id: the replay log says so (``force`` resends it anyway);
- ``truncated``: the dead letter kept only the start of its original: never resent;
- ``no_original``: it kept no original (``privacy.dead_letter_originals: drop``, or the
  message had no value): never resent;
- ``not_selected``: left out by ``--reason`` or ``--since``, or another pipeline's;
- ``unreadable``: not a dead-letter record.

This module decides from one record; ``streams.cli.replay_run`` reads the topic, consults and
writes the replay log, sends, and reports.

>>> parse_since("90m", now=10_000.0)
4600.0
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import BadInput, ReplayError
from streams.learning.join import STAGE as LABEL_STAGE
from streams.learning.join import parse_label
from streams.scoring.limits import InputLimits
from streams.scoring.privacy import Privacy
from streams.scoring.records import decode_original_key, decode_original_value
from streams.scoring.validation import STAGE as DECODE_STAGE
from streams.scoring.validation import EventValidator, parse_timestamp
from streams.spec import PipelineSpec

REPLAYED = "replayed"
STILL_INVALID = "still_invalid"
ALREADY_REPLAYED = "already_replayed"
TRUNCATED = "truncated"
NO_ORIGINAL = "no_original"
NOT_SELECTED = "not_selected"
UNREADABLE = "unreadable"
#: Every outcome, in the order a report lists them.
OUTCOMES = (
    REPLAYED, STILL_INVALID, ALREADY_REPLAYED, TRUNCATED, NO_ORIGINAL, NOT_SELECTED, UNREADABLE,
)  # fmt: skip

ENCODE_STAGE = "encode"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class Resend:
    """One original to send again, and the id the replay log records it under."""

    topic: str
    key: bytes | None
    value: bytes
    identity: str  # 'event:<id>', 'label:<id>' (ids as records carry them), or 'source:...'


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str
    resend: Resend | None = None  # for a candidate: resent unless the replay log has it
    reason: str = ""  # why it is still invalid, by the current validator


def parse_since(text: str, now: float) -> float:
    """``--since``: an ISO 8601 time (naive means UTC) or a duration ago (``30s``, ``90m``,
    ``2h``, ``7d``) -> epoch seconds."""
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        return parse_timestamp(text)
    except (ValueError, TypeError, OverflowError) as exc:
        msg = f"--since {text!r} is neither an ISO 8601 time nor a duration like 90m, 2h, 7d"
        raise ReplayError(msg) from exc


class ReplaySelector:
    """Decides, for one dead-letter record, what a replay does with it."""

    def __init__(
        self,
        spec: PipelineSpec,
        limits: InputLimits,
        privacy: Privacy,
        *,
        reasons: Collection[str] = (),
        since: float | None = None,
        force: bool = False,
    ) -> None:
        self.spec = spec
        self.limits = limits
        self.privacy = privacy
        self.reasons = frozenset(reasons)
        self.since = since
        self.force = force
        self.validator = EventValidator(
            spec.event, spec.entity.field, limits, withheld=privacy.withheld
        )

    def decide(self, record: bytes | None, now: float) -> Decision:
        """The outcome of one dead-letter record; ``now`` stands for the Kafka timestamp
        the resent message will get (an event without a time field takes it)."""
        letter = _read(record)
        if letter is None:
            return Decision(UNREADABLE)
        if not self._selected(letter):
            return Decision(NOT_SELECTED)
        if letter.get("original_key_truncated") or letter.get("original_value_truncated"):
            return Decision(TRUNCATED)
        try:
            key, value = decode_original_key(letter), decode_original_value(letter)
        except (binascii.Error, ValueError, TypeError):
            return Decision(UNREADABLE)
        if value is None:
            return Decision(NO_ORIGINAL)
        stage = letter["stage"]
        if stage == LABEL_STAGE:
            return self._label(letter, key, value, now)
        if stage in (DECODE_STAGE, ENCODE_STAGE):
            return self._event(letter, key, value, now)
        return Decision(UNREADABLE)

    def _selected(self, letter: dict[str, Any]) -> bool:
        if letter["pipeline"] != self.spec.name:
            return False
        if self.reasons and letter["reason"] not in self.reasons:
            return False
        return self.since is None or letter["dead_lettered_at"] >= self.since

    def _event(
        self, letter: dict[str, Any], key: bytes | None, value: bytes, now: float
    ) -> Decision:
        topic = self.spec.input.topic
        try:
            self.limits.check_key(DECODE_STAGE, key)
            event = self.validator.parse(value, now)
        except BadInput as bad:
            return self._invalid(letter, topic, key, value, bad.reason)
        identity = f"event:{self.privacy.event_id(event.event_id)}"
        return Decision(REPLAYED, Resend(topic, key, value, identity))

    def _label(
        self, letter: dict[str, Any], key: bytes | None, value: bytes, now: float
    ) -> Decision:
        if self.spec.labels is None:
            return Decision(STILL_INVALID, reason="no_labels_topic")  # nowhere to send it
        topic = self.spec.labels.topic
        try:
            self.limits.check_key(LABEL_STAGE, key)
            label = parse_label(
                value, now, self.limits, show_id=not self.privacy.hashes_id, task=self.spec.task
            )
        except BadInput as bad:
            return self._invalid(letter, topic, key, value, bad.reason)
        identity = f"label:{self.privacy.event_id(label.event_id)}"
        return Decision(REPLAYED, Resend(topic, key, value, identity))

    def _invalid(
        self, letter: dict[str, Any], topic: str, key: bytes | None, value: bytes, reason: str
    ) -> Decision:
        if not self.force:
            return Decision(STILL_INVALID, reason=reason)
        # No valid id to record it under: the message it came from is unique.
        source = letter["source"]
        identity = f"source:{source['topic']}/{source['partition']}/{source['offset']}"
        return Decision(REPLAYED, Resend(topic, key, value, identity), reason=reason)


def _read(record: bytes | None) -> dict[str, Any] | None:
    """A dead-letter record with the fields a replay reads (``dead_lettered_at`` as epoch
    seconds), or None if it is not one."""
    try:
        letter = orjson.loads(record or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(letter, dict) or not isinstance(letter.get("source"), dict):
        return None
    source = letter["source"]
    texts = (letter.get("pipeline"), letter.get("stage"), letter.get("reason"), source.get("topic"))
    numbers = (source.get("partition"), source.get("offset"))
    if not all(isinstance(t, str) for t in texts) or not all(isinstance(n, int) for n in numbers):
        return None
    try:
        letter["dead_lettered_at"] = parse_timestamp(letter.get("dead_lettered_at"))
    except (ValueError, TypeError, OverflowError):
        return None
    return letter
