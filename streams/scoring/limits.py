"""What one input message may be: its size, its ids and its time.

Checked while a message is decoded (``streams.scoring.validation``,
``streams.learning.join``), so that
everything downstream can format and publish what passed: a value past these bounds
becomes that message's own dead letter instead of an error in the middle of its batch.

- **Sizes.** A message value above ``max_event_bytes`` or a key above ``max_key_bytes`` is
  ``too_large``, and so is an event id, entity key or label event id whose UTF-8 text is
  above ``max_key_bytes`` (they become Kafka and Redis keys and are copied into every
  output record).
- **Times** (event time, timestamp fields, ``label_time``) must fall between
  1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z once converted to UTC: records carry them
  as ISO 8601 text, and Python's ``datetime`` cannot format a year outside 1..9999 (a
  ``9999-12-31T23:59:59-12:00`` is year 10000 in UTC). Nothing earlier than the Unix epoch
  is a plausible event time in a stream, and an epoch-ms value of -1e15 or 1e20 is a bug in
  the producer, not a date.

>>> limits = InputLimits(max_event_bytes=1024, max_key_bytes=16)
>>> limits.check_id("decode", "event id", "é" * 9)
Traceback (most recent call last):
...
streams.errors.BadInput: decode: too_large: event id 'ééééééééé' is 18 bytes, above max_key_bytes 16
>>> time_in_range(253_402_343_999.0)  # 9999-12-31T23:59:59-12:00
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streams.errors import BadInput
from streams.settings import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_KEY_BYTES

if TYPE_CHECKING:
    from streams.settings import Settings

TOO_LARGE = "too_large"

EARLIEST_TIME = 0.0  # 1970-01-01T00:00:00Z, epoch seconds
LATEST_TIME = 253_402_300_799.0  # 9999-12-31T23:59:59Z: its microseconds never round up
TIME_RANGE_TEXT = "1970-01-01T00:00:00Z..9999-12-31T23:59:59Z"


def time_in_range(epoch_seconds: float) -> bool:
    """Whether an event or label time (epoch seconds, UTC) is inside the supported range."""
    return EARLIEST_TIME <= epoch_seconds <= LATEST_TIME


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Size limits of input messages (``Settings.max_event_bytes`` / ``max_key_bytes``)."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        return cls(settings.max_event_bytes, settings.max_key_bytes)

    def check_value(self, stage: str, value: bytes | None) -> None:
        """Raise ``BadInput(stage, 'too_large', ...)`` for an oversize message value."""
        if value is not None and len(value) > self.max_event_bytes:
            limit = f"max_event_bytes {self.max_event_bytes}"
            raise BadInput(stage, TOO_LARGE, f"message value is {len(value)} bytes, above {limit}")

    def check_key(self, stage: str, key: bytes | None) -> None:
        """Raise ``BadInput(stage, 'too_large', ...)`` for an oversize message key."""
        if key is not None and len(key) > self.max_key_bytes:
            limit = f"max_key_bytes {self.max_key_bytes}"
            raise BadInput(stage, TOO_LARGE, f"message key is {len(key)} bytes, above {limit}")

    def check_id(
        self, stage: str, what: str, text: str, *, required: bool = True, show: bool = True
    ) -> None:
        """Raise ``BadInput`` for an id longer than ``max_key_bytes`` (or empty, if required).
        The error quotes the id's start unless ``show`` is false (the spec's privacy)."""
        if not text and required:
            raise BadInput(stage, "missing_field", f"{what} is empty")
        # Cheap first: no character takes more than 4 bytes in UTF-8.
        if len(text) * 4 > self.max_key_bytes:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > self.max_key_bytes:
                shown = text[:40] + ("..." if len(text) > 40 else "")
                named = f"{what} {shown!r}" if show else what
                limit = f"max_key_bytes {self.max_key_bytes}"
                raise BadInput(stage, TOO_LARGE, f"{named} is {size} bytes, above {limit}")
