"""Record formats on the output topics: predictions and dead letters (JSON, UTF-8).

Both are documented in README ("Topics and record formats"); change them together.
"""

from __future__ import annotations

import base64
import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class InputMessage:
    """One message as taken from the input topic, with where it came from."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float  # Kafka record timestamp, epoch seconds


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One record to publish."""

    topic: str
    key: bytes | None
    value: bytes


def iso_utc(epoch_seconds: float) -> str:
    """Epoch seconds -> ISO 8601 UTC with microseconds, e.g. '2026-11-22T23:00:00.123000Z'.

    Called for every output record: the date and time of the whole second come from a cache
    (a stream's events share their seconds), the microseconds are rounded as ``datetime``
    rounds them (half to even), so the text is the same as ``strftime``'s.
    """
    second = math.floor(epoch_seconds)
    micros = round((epoch_seconds - second) * 1e6)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    return f"{_utc_second(second)}.{micros:06d}Z"


@functools.lru_cache(maxsize=4096)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def encode_prediction(
    *,
    event_id: str,
    entity_key: str | int,
    model: str,
    version: int | str,
    score: float,
    decision: bool | None,
    features: dict[str, float],
    defaulted: list[str],
    entity_found: bool,
    event_time: str,
    scored_at: str,
) -> bytes:
    """One prediction record. ``decision`` is present only when the spec sets a threshold.

    Both times come formatted (``iso_utc``): ``scored_at`` is the same for a whole batch,
    and ``event_time`` is formatted once per event for the primary's record and every
    shadow's.
    """
    record: dict[str, Any] = {
        "event_id": event_id,
        "entity_key": entity_key,
        "model": model,
        "model_version": version,
        "score": score,
    }
    if decision is not None:
        record["decision"] = decision
    record["features"] = features
    record["features_defaulted"] = bool(defaulted)
    record["defaulted_features"] = defaulted
    record["entity_found"] = entity_found
    record["event_time"] = event_time
    record["scored_at"] = scored_at
    return orjson.dumps(record)


def encode_dead_letter(
    message: InputMessage, *, pipeline: str, stage: str, reason: str, error: str, at: float
) -> bytes:
    """A dead-letter envelope: why it failed, where it came from, the original bytes."""
    return orjson.dumps(
        {
            "pipeline": pipeline,
            "stage": stage,
            "reason": reason,
            "error": error,
            "source": {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "timestamp": iso_utc(message.timestamp),
            },
            "original_key_b64": _b64(message.key),
            "original_value_b64": _b64(message.value),
            "dead_lettered_at": iso_utc(at),
        }
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def decode_original_value(dead_letter: dict[str, Any]) -> bytes | None:
    """The original message value of a decoded dead-letter record (for replay tools)."""
    encoded = dead_letter.get("original_value_b64")
    return None if encoded is None else base64.b64decode(encoded)
