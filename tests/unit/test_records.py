"""Output record formats: predictions and dead-letter envelopes round-trip."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.scoring.records import (
    ORIGINAL_KEY_KEPT_BYTES,
    ORIGINAL_VALUE_KEPT_BYTES,
    InputMessage,
    dead_letter_key,
    decode_original_value,
    encode_dead_letter,
    encode_prediction,
    iso_utc,
)
from streams.scoring.validation import parse_timestamp


def test_prediction_record_fields() -> None:
    record = orjson.loads(
        encode_prediction(
            event_id="e1", entity_key="c1", model="m", version=3, score=0.25, decision=False,
            features={"v__f": 1.0}, defaulted=["v__f"], entity_found=False,
            event_time=iso_utc(1_700_000_000.5), scored_at=iso_utc(1_700_000_000.75),
        )
    )  # fmt: skip
    assert record == {
        "event_id": "e1",
        "entity_key": "c1",
        "model": "m",
        "model_version": 3,
        "score": 0.25,
        "decision": False,
        "features": {"v__f": 1.0},
        "features_defaulted": True,
        "defaulted_features": ["v__f"],
        "entity_found": False,
        "event_time": "2023-11-14T22:13:20.500000Z",
        "scored_at": "2023-11-14T22:13:20.750000Z",
    }


def test_prediction_without_threshold_has_no_decision() -> None:
    record = orjson.loads(
        encode_prediction(
            event_id="e1", entity_key=7, model="m", version=1, score=12.5, decision=None,
            features={}, defaulted=[], entity_found=True,
            event_time=iso_utc(0.0), scored_at=iso_utc(0.0),
        )
    )  # fmt: skip
    assert "decision" not in record and record["features_defaulted"] is False


def test_dead_letter_keeps_original_bytes_and_source() -> None:
    original = b"\xff\x00 not utf-8"
    message = InputMessage(b"k", original, "events", 3, 41, 1_700_000_000.0)
    record = orjson.loads(
        encode_dead_letter(
            message, pipeline="p", stage="decode", reason="not_json", error="boom", at=1.0
        )
    )
    assert decode_original_value(record) == original
    assert record["source"] == {
        "topic": "events",
        "partition": 3,
        "offset": 41,
        "timestamp": iso_utc(1_700_000_000.0),
    }
    assert (record["stage"], record["reason"], record["error"]) == ("decode", "not_json", "boom")
    assert (record["original_key_size"], record["original_value_size"]) == (1, len(original))
    assert record["original_key_truncated"] is False
    assert record["original_value_truncated"] is False


def dead_letter(message: InputMessage, reason: str = "wrong_type", error: str = "e") -> dict:
    return orjson.loads(
        encode_dead_letter(message, pipeline="p", stage="decode", reason=reason, error=error, at=1)
    )


def test_a_too_large_dead_letter_keeps_the_first_kib_and_the_size() -> None:
    value, key = bytes(range(256)) * 5000, b"k" * 5000
    encoded = encode_dead_letter(
        InputMessage(key, value, "events", 0, 7, 1_700_000_000.0),
        pipeline="p", stage="decode", reason="too_large", error="too big", at=1.0,
    )  # fmt: skip
    record = orjson.loads(encoded)
    assert decode_original_value(record) == value[:1024]
    assert record["original_value_size"] == 1_280_000 and record["original_value_truncated"]
    assert record["original_key_size"] == 5000 and record["original_key_truncated"]
    assert len(encoded) < 4096


def test_a_dead_letter_fits_one_mib_whatever_its_original() -> None:
    """Kafka's default max.message.bytes is 1 MiB: a dead letter above it could never be
    published, and its batch's inputs never acked."""
    message = InputMessage(b"k" * 100_000, b"v" * 5_000_000, "events", 0, 7, 1_700_000_000.0)
    encoded = encode_dead_letter(
        message, pipeline="p", stage="decode", reason="unknown_category", error="x" * 2_000_000,
        at=1.0,
    )  # fmt: skip
    assert len(encoded) + len(dead_letter_key(message.key) or b"") < 1024 * 1024
    record = orjson.loads(encoded)
    assert decode_original_value(record) == b"v" * ORIGINAL_VALUE_KEPT_BYTES
    assert record["original_value_truncated"] and record["original_key_truncated"]
    assert len(record["error"]) < 1100


def test_dead_letter_key_is_the_original_unless_past_any_input_key_limit() -> None:
    assert dead_letter_key(None) is None
    assert dead_letter_key(b"k" * ORIGINAL_KEY_KEPT_BYTES) == b"k" * ORIGINAL_KEY_KEPT_BYTES
    assert dead_letter_key(b"k" * (ORIGINAL_KEY_KEPT_BYTES + 1)) == b"k" * 1024


def test_a_tombstone_dead_letter_has_no_original_value() -> None:
    record = dead_letter(InputMessage(None, None, "events", 0, 7, 0.0), reason="not_json")
    assert record["original_value_b64"] is None and record["original_value_size"] is None
    assert record["original_value_truncated"] is False


@pytest.mark.parametrize("timestamp", [1e17, -1e13])
def test_a_kafka_timestamp_datetime_cannot_format_leaves_the_dead_letter_intact(
    timestamp: float,
) -> None:
    record = dead_letter(InputMessage(b"k", b"{}", "events", 1, 7, timestamp))
    assert record["source"] == {"topic": "events", "partition": 1, "offset": 7, "timestamp": None}


@pytest.mark.parametrize("epoch_seconds", [253_402_300_800.0, 1e17, -1e13, 2.0**70])
def test_iso_utc_raises_value_error_outside_what_datetime_formats(epoch_seconds: float) -> None:
    with pytest.raises(ValueError, match="out of range|outside the years"):
        iso_utc(epoch_seconds)


def test_iso_utc_round_trips_through_the_parser() -> None:
    assert parse_timestamp(iso_utc(1_700_000_000.123456)) == 1_700_000_000.123456


@given(
    st.one_of(
        st.floats(min_value=0, max_value=4102444800, allow_nan=False),
        st.integers(min_value=0, max_value=4102444800).map(lambda s: s + 0.9999995),
        st.integers(min_value=0, max_value=4102444800).map(lambda s: s + 0.0000005),
    )
)
def test_iso_utc_is_strftime_of_datetime(epoch_seconds: float) -> None:
    expected = datetime.fromtimestamp(epoch_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso_utc(epoch_seconds) == expected


def test_the_online_shadows_records_say_how_many_labels_its_snapshot_learned() -> None:
    from streams.scoring.records import encode_shadow_prediction

    common = dict(
        event_id="e1", entity_key=None, model="m", version=3, score=0.2, decision=False,
        primary_score=0.1, event_time="t", scored_at="t",
    )  # fmt: skip
    assert (
        orjson.loads(encode_shadow_prediction(**common, learned_labels=42))["learned_labels"] == 42
    )
    assert "learned_labels" not in orjson.loads(encode_shadow_prediction(**common))
