"""Poison events: values that once passed validation and then failed while the batch's
records were built (the agent crashed, Faust restarted it, the partition never moved again),
and oversize messages. Each must become its own dead letter, with the rest of its batch
scored. No broker, no Redis, no ONNX: in-memory stand-ins for the feature source and model.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest

from streams.metrics import Metrics
from streams.scoring.limits import InputLimits
from streams.scoring.pipeline import ScoringPipeline
from streams.scoring.records import InputMessage, iso_utc
from streams.scoring.validation import Event, EventValidator
from streams.spec import load_spec_text

SPEC = load_spec_text(
    """
name: poison
input: {topic: events}
event:
  id_field: id
  time_field: ts
  fields:
    id: {type: string}
    ts: {type: timestamp}
    user: {type: string}
    amount: {type: float, min: 0, max: 1000}
    n: {type: int, required: false, default: 0}
entity: {field: user, join_key: user_id}
features:
  repo: repo
  refs: ["stats:spend"]
  defaults: {"stats:spend": 0.0}
model_input:
  - {event: amount}
  - {feature: "stats:spend"}
model: {name: fake, threshold: 0.5}
output: {topic: scores, dead_letter_topic: dlq}
""",
    base_dir=Path("/tmp"),
)
NOW = 1_700_000_000.0
TS = "2023-11-14T22:13:20Z"


@dataclass
class Rows:
    values: np.ndarray
    defaulted: np.ndarray
    entity_found: np.ndarray
    timestamps: np.ndarray


class Features:
    async def read_async(self, keys):
        n = len(keys)
        ones = np.ones((n, 1))
        return Rows(ones, np.zeros((n, 1), dtype=bool), np.ones(n, dtype=bool), ones * NOW)


class Scorer:
    name, version = "fake", 1

    def score(self, matrix):
        return matrix[:, 0].astype(np.float64) / 1000.0


def pipeline(metrics: Metrics | None = None, **kwargs) -> ScoringPipeline:
    return ScoringPipeline(
        SPEC, Features(), Scorer(), metrics or Metrics(), clock=lambda: NOW, **kwargs
    )


def event(event_id: str, ts_json: bytes = orjson.dumps(TS), **fields) -> bytes:
    """An event as JSON text, with ``ts`` given as raw JSON (2**70 has no orjson encoding)."""
    body = orjson.dumps({"id": event_id, "ts": "@TS@", "user": "u1", "amount": 5, **fields})
    return body.replace(b'"@TS@"', ts_json)


def message(offset: int, value: bytes, key: bytes | None = None) -> InputMessage:
    key = f"k{offset}".encode() if key is None else key
    return InputMessage(key, value, "events", 0, offset, NOW)


POISON_TIMES = {
    "epoch ms -1e15": b"-1000000000000000",
    "epoch ms 1e20": b"1e20",
    "ISO year 10000 in UTC": b'"9999-12-31T23:59:59-12:00"',
    "epoch ms 2**70": str(2**70).encode(),
    "ISO year 0 in UTC": b'"0001-01-01T00:00:00+14:00"',
    "before the epoch": b'"1969-12-31T23:59:59Z"',
}


def mixed_batch(poison: dict[str, bytes]) -> tuple[list[InputMessage], list[str]]:
    """A valid event before and after every poison one; returns the batch and valid ids."""
    batch, valid = [message(0, event("ok-0"))], ["ok-0"]
    for i, raw in enumerate(poison.values(), start=1):
        batch.append(message(2 * i - 1, raw))
        batch.append(message(2 * i, event(f"ok-{i}")))
        valid.append(f"ok-{i}")
    return batch, valid


def decoded(scored) -> tuple[list[dict], list[dict]]:
    return (
        [orjson.loads(r.value) for r in scored.predictions],
        [orjson.loads(r.value) for r in scored.dead_letters],
    )


async def test_events_with_unformattable_times_are_dead_lettered_and_the_rest_scored() -> None:
    poison = {name: event(f"poison-{i}", ts) for i, (name, ts) in enumerate(POISON_TIMES.items())}
    batch, valid = mixed_batch(poison)
    metrics = Metrics()
    scored = await pipeline(metrics).score_batch(batch)

    predictions, dead = decoded(scored)
    assert [p["event_id"] for p in predictions] == valid
    assert [d["source"]["offset"] for d in dead] == [1, 3, 5, 7, 9, 11]
    for letter, ts in zip(dead, POISON_TIMES.values(), strict=True):
        assert (letter["stage"], letter["reason"]) == ("decode", "out_of_range")
        assert "field 'ts'" in letter["error"] and "1970-01-01T00:00:00Z" in letter["error"]
        assert ts in base64.b64decode(letter["original_value_b64"])
    labels = {"pipeline": "poison", "stage": "decode", "reason": "out_of_range"}
    assert metrics.registry.get_sample_value("streamscore_dead_letters_total", labels) == 6


async def test_the_bounds_of_the_time_range_are_scored() -> None:
    batch = [
        message(0, event("epoch", orjson.dumps(0))),
        message(1, event("last", b'"9999-12-31T23:59:59Z"')),
        message(2, event("last-ms", orjson.dumps(253_402_300_799_000))),
    ]
    scored = await pipeline().score_batch(batch)
    predictions, dead = decoded(scored)
    assert dead == []
    assert [p["event_time"] for p in predictions] == [
        "1970-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.000000Z",
        "9999-12-31T23:59:59.000000Z",
    ]


async def test_an_out_of_range_kafka_timestamp_dead_letters_its_event_only() -> None:
    spec = SPEC.model_copy(update={"event": SPEC.event.model_copy(update={"time_field": None})})
    scoring = ScoringPipeline(spec, Features(), Scorer(), Metrics(), clock=lambda: NOW)
    bad_time = InputMessage(b"k1", event("kafka-time"), "events", 0, 1, 1e17)
    scored = await scoring.score_batch([message(0, event("ok")), bad_time])
    predictions, dead = decoded(scored)
    assert [p["event_id"] for p in predictions] == ["ok"]
    assert dead[0]["reason"] == "out_of_range" and "Kafka timestamp" in dead[0]["error"]
    assert dead[0]["source"]["timestamp"] is None  # year 3170843: not formattable either


async def test_ints_beyond_64_bits_and_bad_ids_are_dead_lettered() -> None:
    poison = {
        "uint64 max": event("big-int", n=2**64 - 1),
        "integral float 1e20": event("big-float-int", n=1e20),
        "empty id": event(""),
        "id of 513 bytes": event("x" * 513),
        "entity key of 513 bytes": event("long-entity", user="u" * 513),
    }
    batch, valid = mixed_batch(poison)
    scored = await pipeline().score_batch(batch)
    predictions, dead = decoded(scored)
    assert [p["event_id"] for p in predictions] == valid
    too_long = "is 513 bytes, above max_key_bytes 512"
    assert [(d["reason"], d["error"]) for d in dead] == [
        ("out_of_range", "field 'n': 18446744073709551615 is outside the 64-bit int range"),
        ("out_of_range", "field 'n': 100000000000000000000 is outside the 64-bit int range"),
        ("missing_field", "event id field 'id' is empty"),
        ("too_large", f"event id field 'id' '{'x' * 40}...' {too_long}"),
        ("too_large", f"entity key field 'user' '{'u' * 40}...' {too_long}"),
    ]


async def test_oversize_values_and_keys_become_small_too_large_dead_letters() -> None:
    huge = event("huge", padding="p" * 1_200_000)
    long_key = b"K" * 20_000
    batch = [
        message(0, event("ok-0")),
        message(1, huge),
        message(2, event("ok-1")),
        message(3, event("long-key"), key=long_key),
        message(4, event("ok-2")),
    ]
    scored = await pipeline().score_batch(batch)
    predictions, dead = decoded(scored)
    assert [p["event_id"] for p in predictions] == ["ok-0", "ok-1", "ok-2"]

    value_letter, key_letter = dead
    assert value_letter["reason"] == "too_large" and value_letter["stage"] == "decode"
    assert value_letter["error"] == (
        f"message value is {len(huge)} bytes, above max_event_bytes {256 * 1024}"
    )
    assert base64.b64decode(value_letter["original_value_b64"]) == huge[:1024]
    assert value_letter["original_value_size"] == len(huge)
    assert value_letter["original_value_truncated"] is True
    assert value_letter["original_key_truncated"] is False
    assert len(scored.dead_letters[0].value) < 4096

    assert key_letter["reason"] == "too_large"
    assert key_letter["error"] == "message key is 20000 bytes, above max_key_bytes 512"
    assert base64.b64decode(key_letter["original_key_b64"]) == long_key[:1024]
    assert (key_letter["original_key_size"], key_letter["original_key_truncated"]) == (20000, True)
    assert scored.dead_letters[1].key == long_key[:1024]  # the dead letter's own key is cut too
    assert len(scored.dead_letters[1].value) < 4096


async def test_size_limits_come_from_the_given_limits() -> None:
    limits = InputLimits(max_event_bytes=2048, max_key_bytes=16)
    batch = [
        message(0, event("ok", padding="p" * 1000)),
        message(1, event("big", padding="p" * 3000)),
        message(2, event("ok-key"), key=b"k" * 17),
        message(3, event("id-of-17-bytes-xx")),
    ]
    scored = await pipeline(limits=limits).score_batch(batch)
    predictions, dead = decoded(scored)
    assert [p["event_id"] for p in predictions] == ["ok"]
    assert [d["reason"] for d in dead] == ["too_large"] * 3


class Unchecked(EventValidator):
    """A validator with a hole: it passes events straight through, as a future bug in
    validation would (the encode stage is the defence behind it)."""

    def __init__(self, events: dict[bytes, Event]) -> None:
        self.events = events

    def parse(self, raw, fallback_time):
        return self.events[raw]


def plain(event_id: str, **changes) -> Event:
    fields = {"id": event_id, "user": "u1", "amount": 500.0, "n": 0}
    return Event(**{"event_id": event_id, "entity_key": "u1", "time": NOW, "fields": fields,
                    **changes})  # fmt: skip


async def test_an_event_that_cannot_be_encoded_is_its_own_dead_letter() -> None:
    events = [
        plain("ok-0"),
        plain("year-10000", time=253_402_343_999.0),
        plain("ok-1"),
        plain("epoch-ms-2**70", time=2**70 / 1000),
        plain("ok-2"),
        plain("int-entity-2**70", entity_key=2**70),
        plain("lone-surrogate-\ud800"),
        plain("ok-3"),
    ]
    metrics = Metrics()
    scoring = pipeline(metrics)
    scoring.validator = Unchecked({str(i).encode(): e for i, e in enumerate(events)})
    scored = await scoring.score_batch([message(i, str(i).encode()) for i in range(len(events))])

    predictions, dead = decoded(scored)
    ok = ["ok-0", "ok-1", "ok-2", "ok-3"]
    assert [p["event_id"] for p in predictions] == ok
    assert [(d["stage"], d["reason"]) for d in dead] == [("encode", "unencodable")] * 4
    assert [d["source"]["offset"] for d in dead] == [1, 3, 5, 6]
    assert dead[0]["error"].startswith("event 'year-10000': ValueError: year 10000")
    assert "Integer exceeds 64-bit range" in dead[2]["error"]
    assert "not valid UTF-8" in dead[3]["error"]
    # What later stages reuse (prediction store, shadows) holds only the encoded events.
    assert scored.event_ids == ok
    assert scored.event_time_texts == [iso_utc(NOW)] * 4
    assert scored.matrix.shape[0] == 4 and scored.scores.tolist() == [0.5] * 4
    sample = metrics.registry.get_sample_value
    labels = {"pipeline": "poison", "stage": "encode", "reason": "unencodable"}
    assert sample("streamscore_dead_letters_total", labels) == 4
    assert sample("streamscore_predictions_total", {"pipeline": "poison", "model": "fake"}) == 4


@pytest.mark.parametrize("name", sorted(POISON_TIMES))
async def test_each_poison_time_alone_is_one_dead_letter(name: str) -> None:
    scored = await pipeline().score_batch([message(0, event("p", POISON_TIMES[name]))])
    assert scored.predictions == [] and len(scored.dead_letters) == 1


def test_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.settings import Settings, SettingsError, load_settings

    assert InputLimits.from_settings(Settings()) == InputLimits(256 * 1024, 512)
    monkeypatch.setenv("STREAMSCORE_MAX_EVENT_BYTES", "4096")
    monkeypatch.setenv("STREAMSCORE_MAX_KEY_BYTES", "64")
    assert InputLimits.from_settings(load_settings()) == InputLimits(4096, 64)
    # A dead letter keeps at most 16 KiB of a key, so no input key may be longer.
    monkeypatch.setenv("STREAMSCORE_MAX_KEY_BYTES", str(16 * 1024 + 1))
    with pytest.raises(SettingsError, match="STREAMSCORE_MAX_KEY_BYTES"):
        load_settings()
