"""Record formats on the output topics: predictions, shadow predictions and dead letters
(JSON, UTF-8).

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

from streams.scoring.limits import TOO_LARGE


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
    rounds them (half to even), so the text is the same as ``strftime``'s. A time outside
    years 1..9999 raises ``ValueError`` (validation keeps event times inside 1970..9999).
    """
    second = math.floor(epoch_seconds)
    micros = round((epoch_seconds - second) * 1e6)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    return f"{_utc_second(second)}.{micros:06d}Z"


@functools.lru_cache(maxsize=4096)
def _utc_second(second: int) -> str:
    try:
        return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError) as exc:  # past the C library's time_t or gmtime
        msg = f"epoch second {second} is outside the years datetime can format"
        raise ValueError(msg) from exc


def encode_prediction(
    *,
    event_id: str,
    entity_key: str | int | None,
    model: str,
    version: int | str,
    score: float,
    decision: bool | None,
    features: dict[str, float],
    defaulted: list[str],
    entity_found: bool,
    event_time: str,
    scored_at: str,
    feature_ages: dict[str, float] | None = None,
    stale_views: list[str] | None = None,
    served_by: str | None = None,
) -> bytes:
    """One prediction record. ``decision`` is present only when the spec sets a threshold,
    ``entity_key`` only when it is not None (the spec's privacy drops it).

    ``feature_ages``: seconds from each feature view's row to the event (NaN, encoded null,
    where the store had no row); ``stale_views``: the views whose row was older than the
    spec's ``features.max_age_seconds``, present only when the spec sets it; ``served_by``:
    ``primary`` or ``canary``, present only when the spec declares a ``model.canary``.

    Both times come formatted (``iso_utc``): ``scored_at`` is the same for a whole batch,
    and ``event_time`` is formatted once per event for the primary's record and every
    shadow's.
    """
    record: dict[str, Any] = {"event_id": event_id}
    if entity_key is not None:
        record["entity_key"] = entity_key
    record["model"] = model
    record["model_version"] = version
    record["score"] = score
    if decision is not None:
        record["decision"] = decision
    if served_by is not None:
        record["served_by"] = served_by
    record["features"] = features
    record["features_defaulted"] = bool(defaulted)
    record["defaulted_features"] = defaulted
    record["entity_found"] = entity_found
    if feature_ages is not None:
        record["feature_age_seconds"] = feature_ages
    if stale_views is not None:
        record["stale_views"] = stale_views
    record["event_time"] = event_time
    record["scored_at"] = scored_at
    return orjson.dumps(record)


def encode_shadow_prediction(
    *,
    event_id: str,
    entity_key: str | int | None,
    model: str,
    version: int,
    score: float,
    decision: bool | None,
    primary_score: float,
    event_time: str,
    scored_at: str,
    learned_labels: int | None = None,
) -> bytes:
    """One shadow's prediction for one event; ``entity_key`` as in ``encode_prediction``.
    ``decision`` is left out when None (a regression pipeline: no decisions).
    ``learned_labels``: for the online shadow, how many labels the snapshot it scored with
    had learned (with ``model_version``, the snapshot's version)."""
    record: dict[str, Any] = {"event_id": event_id}
    if entity_key is not None:
        record["entity_key"] = entity_key
    record["model"] = model
    record["model_version"] = version
    if learned_labels is not None:
        record["learned_labels"] = learned_labels
    record["role"] = "shadow"
    record["score"] = score
    if decision is not None:
        record["decision"] = decision
    record["primary_score"] = primary_score
    record["event_time"] = event_time
    record["scored_at"] = scored_at
    return orjson.dumps(record)


# A dead letter must always be publishable: Kafka's default max.message.bytes is 1 MiB, and
# base64 makes bytes 4/3 as long. With these bounds the largest envelope is ~730 KiB.
ORIGINAL_VALUE_KEPT_BYTES = 512 * 1024  # a value is kept whole up to this: replayable
ORIGINAL_KEY_KEPT_BYTES = 16 * 1024  # = the largest max_key_bytes the settings accept
TOO_LARGE_KEPT_BYTES = 1024  # a too_large original is evidence, not replayable: its head
ERROR_KEPT_CHARS = 1024  # an error may quote the offending value


def encode_dead_letter(
    message: InputMessage,
    *,
    pipeline: str,
    stage: str,
    reason: str,
    error: str,
    at: float,
    keep_original: bool = True,
) -> bytes:
    """A dead-letter envelope: why it failed, where it came from, the original bytes.

    The original key and value are kept whole, except a ``too_large`` message's (its first
    ``TOO_LARGE_KEPT_BYTES``) and anything above ``ORIGINAL_*_KEPT_BYTES``; the
    ``original_*_size`` and ``original_*_truncated`` fields say what happened. Without
    ``keep_original`` (the spec's ``privacy.dead_letter_originals: drop``) neither is kept:
    ``original_*_b64`` are null, the sizes stay, and ``original_dropped`` is true.
    """
    too_large = reason == TOO_LARGE
    value_kept = TOO_LARGE_KEPT_BYTES if too_large else ORIGINAL_VALUE_KEPT_BYTES
    key_kept = TOO_LARGE_KEPT_BYTES if too_large else ORIGINAL_KEY_KEPT_BYTES
    key, value = message.key, message.value
    kept_key, kept_value = (key, value) if keep_original else (None, None)
    return orjson.dumps(
        {
            "pipeline": pipeline,
            "stage": stage,
            "reason": reason,
            "error": error if len(error) <= ERROR_KEPT_CHARS else error[:ERROR_KEPT_CHARS] + "...",
            "source": {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "timestamp": _iso_utc_or_none(message.timestamp),
            },
            "original_key_b64": _b64(None if kept_key is None else kept_key[:key_kept]),
            "original_value_b64": _b64(None if kept_value is None else kept_value[:value_kept]),
            "original_key_size": None if key is None else len(key),
            "original_value_size": None if value is None else len(value),
            "original_key_truncated": kept_key is not None and len(kept_key) > key_kept,
            "original_value_truncated": kept_value is not None and len(kept_value) > value_kept,
            "original_dropped": not keep_original,
            "dead_lettered_at": iso_utc(at),
        }
    )


def dead_letter_key(key: bytes | None, *, keep_original: bool = True) -> bytes | None:
    """The dead letter's own Kafka key: the original key, or its first KiB when it is longer
    than any input key may be (``ORIGINAL_KEY_KEPT_BYTES``); none when the original is not
    kept (an input key is usually the event id)."""
    if key is None or not keep_original:
        return None
    return key if len(key) <= ORIGINAL_KEY_KEPT_BYTES else key[:TOO_LARGE_KEPT_BYTES]


def _iso_utc_or_none(epoch_seconds: float) -> str | None:
    """A Kafka timestamp is the producer's to set: one ``datetime`` cannot format (or none)
    must not stop the dead letter that reports it."""
    try:
        return iso_utc(epoch_seconds)
    except (ValueError, TypeError):
        return None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def decode_original_value(dead_letter: dict[str, Any]) -> bytes | None:
    """The original message value of a decoded dead-letter record (for replay tools)."""
    encoded = dead_letter.get("original_value_b64")
    return None if encoded is None else base64.b64decode(encoded, validate=True)


def decode_original_key(dead_letter: dict[str, Any]) -> bytes | None:
    """The original message key of a decoded dead-letter record (for replay tools)."""
    encoded = dead_letter.get("original_key_b64")
    return None if encoded is None else base64.b64decode(encoded, validate=True)


def json_object(value: bytes | None) -> dict[str, Any] | None:
    """A record's value (or a stored entry) read as a JSON object; None for anything else
    (not JSON, or JSON but not an object), which readers skip.

    >>> json_object(b'{"kind": "drift"}'), json_object(b"[1]"), json_object(b"nope")
    ({'kind': 'drift'}, None, None)
    """
    try:
        document = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None
