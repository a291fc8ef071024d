"""Output record formats: predictions and dead-letter envelopes round-trip."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.records import (
    InputMessage,
    decode_original_value,
    encode_dead_letter,
    encode_prediction,
    iso_utc,
)
from streams.validation import parse_timestamp


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
