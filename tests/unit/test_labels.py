"""The label join's decode step: a bad label record is that record's own dead letter (stage
``label``) and the rest of its batch is joined. The prediction store is an in-memory stand-in
here; tests/integration/test_labels.py runs the real one."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from streams.errors import BadInput
from streams.learning.join import LabelJoiner, _label_value, parse_label
from streams.metrics import Metrics
from streams.scoring.limits import InputLimits
from streams.scoring.prediction_store import StoredPrediction
from streams.scoring.records import InputMessage
from streams.spec import load_spec_text

SPEC = load_spec_text(
    """
name: labelled
input: {topic: events}
event:
  id_field: id
  fields: {id: {type: string}, user: {type: string}, amount: {type: float}}
entity: {field: user, join_key: user_id}
features: {repo: repo, refs: ["s:f"], defaults: {"s:f": 0.0}}
model_input: [{event: amount}]
model: {name: m}
labels: {topic: labels, window_seconds: 600}
output: {topic: scores, dead_letter_topic: dlq}
""",
    base_dir=Path("/tmp"),
)
NOW = 1_700_000_000.0

POISON_LABEL_TIMES = {
    "epoch ms -1e15": b"-1000000000000000",
    "epoch ms 1e20": b"1e20",
    "ISO year 10000 in UTC": b'"9999-12-31T23:59:59-12:00"',
    "epoch ms 2**70": str(2**70).encode(),
    "before the epoch": b'"1969-12-31T23:59:59Z"',
}


def label(event_id: str = "e1", label_time: bytes = b'"2023-11-14T22:13:20Z"') -> bytes:
    body = orjson.dumps({"event_id": event_id, "label": 1, "label_time": "@T@"})
    return body.replace(b'"@T@"', label_time)


@pytest.mark.parametrize("name", sorted(POISON_LABEL_TIMES))
def test_a_label_time_outside_the_range_is_bad_input(name: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_label(label(label_time=POISON_LABEL_TIMES[name]), NOW)
    assert (caught.value.stage, caught.value.reason) == ("label", "out_of_range")
    assert "'label_time'" in caught.value.detail and "9999-12-31T23:59:59Z" in caught.value.detail


def test_label_time_bounds_and_fallback() -> None:
    assert parse_label(label(label_time=b"0"), NOW).label_time == 0.0
    last = parse_label(label(label_time=b'"9999-12-31T23:59:59Z"'), NOW)
    assert last.label_time == 253_402_300_799.0
    assert parse_label(b'{"event_id": "e", "label": 0}', NOW).label_time == NOW


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (label(event_id=""), "missing_field"),
        (label(event_id="e" * 513), "too_large"),
        (label() + b" " * 256 * 1024, "too_large"),
    ],
)
def test_bad_ids_and_sizes_are_bad_input(raw: bytes, reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_label(raw, NOW)
    assert (caught.value.stage, caught.value.reason) == ("label", reason)


class Store:
    """Every event was predicted a second ago."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def get(self, event_ids, shadow_models):
        self.asked.append(list(event_ids))
        return [
            StoredPrediction(e, NOW - 1.0, "m", 1, np.zeros(1, np.float32), {"m": 0.5})
            for e in event_ids
        ]

    async def count_forwarded(self, n: int) -> int:
        """The taken-labels counter the online shadows measure staleness against."""
        self.forwarded = getattr(self, "forwarded", 0) + n
        return self.forwarded


async def test_bad_labels_are_dead_lettered_and_the_rest_joined() -> None:
    store, metrics = Store(), Metrics()
    joiner = LabelJoiner(SPEC, store, metrics, clock=lambda: NOW)  # type: ignore[arg-type]
    poison = [label(f"p{i}", t) for i, t in enumerate(POISON_LABEL_TIMES.values())]
    poison += [label() + b" " * 300_000, label("x" * 600)]
    raws = [label("ok-0")]
    for i, raw in enumerate(poison, start=1):
        raws += [raw, label(f"ok-{i}")]
    messages = [InputMessage(b"k", raw, "labels", 0, i, NOW) for i, raw in enumerate(raws)]
    messages.append(InputMessage(b"K" * 2000, label("long-key"), "labels", 0, 99, NOW))

    outcome = await joiner.join(messages)

    assert store.asked == [[f"ok-{i}" for i in range(len(poison) + 1)]]
    assert [r["event_id"] for r in outcome.joined] == [f"ok-{i}" for i in range(8)]
    dead = [orjson.loads(r.value) for r in outcome.dead_letters]
    assert [(d["stage"], d["reason"]) for d in dead] == (
        [("label", "out_of_range")] * 5 + [("label", "too_large")] * 3
    )
    assert dead[5]["original_value_truncated"] and len(outcome.dead_letters[5].value) < 4096
    assert base64.b64decode(dead[7]["original_key_b64"]) == b"K" * 1024
    assert outcome.counts == {"joined": 8, "late": 0, "orphan": 0, "invalid": 8}
    assert store.forwarded == 8  # counted once per batch, for the online staleness


async def test_the_joiner_takes_its_limits() -> None:
    joiner = LabelJoiner(
        SPEC, Store(), Metrics(), clock=lambda: NOW,  # type: ignore[arg-type]
        limits=InputLimits(max_event_bytes=1024, max_key_bytes=16),
    )  # fmt: skip
    messages = [
        InputMessage(b"k", label("sixteen-bytes-id"), "labels", 0, 0, NOW),
        InputMessage(b"k", label("seventeen-bytes-i"), "labels", 0, 1, NOW),
    ]
    outcome = await joiner.join(messages)
    assert [r["event_id"] for r in outcome.joined] == ["sixteen-bytes-id"]
    assert orjson.loads(outcome.dead_letters[0].value)["reason"] == "too_large"


# --- the label's value, by the pipeline's task ---------------------------------------------

REGRESSION_SPEC = SPEC.model_copy(update={"task": "regression"})


def valued(value: bytes) -> bytes:
    return b'{"event_id": "e1", "label": ' + value + b"}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"3.5", 3.5), (b"-2", -2.0), (b"0", 0.0), (b"1", 1.0), (b"1e308", 1e308), (b"12e-3", 0.012)],
)
def test_a_regression_label_is_any_finite_number(value: bytes, expected: float) -> None:
    parsed = parse_label(valued(value), NOW, task="regression")
    assert parsed.label == expected and type(parsed.label) is float


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (b"true", "wrong_type", "'label' must be a number (regression), got True"),
        (b'"3.5"', "wrong_type", "'label' must be a number (regression), got '3.5'"),
        (b"null", "wrong_type", "got None"),
        (b"[1]", "wrong_type", "got [1]"),
        (b"1e999", "not_json", "infinity"),  # JSON has no infinity: orjson refuses it
        (b"NaN", "not_json", "not valid JSON"),
    ],
)
def test_a_regression_label_that_is_not_a_finite_number_is_bad_input(
    value: bytes, reason: str, detail: str
) -> None:
    with pytest.raises(BadInput) as caught:
        parse_label(valued(value), NOW, task="regression")
    assert (caught.value.stage, caught.value.reason) == ("label", reason)
    assert detail in caught.value.detail


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_non_finite_numbers_are_out_of_range_whoever_decoded_them(value: float) -> None:
    with pytest.raises(BadInput) as caught:
        _label_value(value, "regression")
    assert caught.value.reason == "out_of_range"
    assert "is not a finite number (regression)" in caught.value.detail


@pytest.mark.parametrize(("value", "expected"), [(b"0", 0), (b"1", 1), (b"true", 1), (b"false", 0)])
def test_a_classification_label_is_still_0_1_true_or_false(value: bytes, expected: int) -> None:
    parsed = parse_label(valued(value), NOW)
    assert parsed.label == expected and type(parsed.label) is int


@pytest.mark.parametrize("value", [b"0.5", b"2", b'"1"', b"null", b"1.5e2"])
def test_a_classification_label_refuses_other_numbers(value: bytes) -> None:
    with pytest.raises(BadInput) as caught:
        parse_label(valued(value), NOW, task="classification")
    assert (caught.value.stage, caught.value.reason) == ("label", "wrong_type")
    assert "must be 0, 1, true or false (classification)" in caught.value.detail


async def test_a_regression_joiner_forwards_numbers_and_dead_letters_the_rest() -> None:
    joiner = LabelJoiner(REGRESSION_SPEC, Store(), Metrics(), clock=lambda: NOW)  # type: ignore[arg-type]
    raws = [valued(b"41.25"), valued(b'"late"'), valued(b"7"), valued(b"false")]
    messages = [InputMessage(b"k", raw, "labels", 0, i, NOW) for i, raw in enumerate(raws)]
    outcome = await joiner.join(messages)
    assert [r["label"] for r in outcome.joined] == [41.25, 7.0]
    dead = [orjson.loads(r.value) for r in outcome.dead_letters]
    assert [(d["stage"], d["reason"]) for d in dead] == [("label", "wrong_type")] * 2
    assert outcome.counts == {"joined": 2, "late": 0, "orphan": 0, "invalid": 2}
    # The classification joiner takes the opposite view of the same records.
    classification = await LabelJoiner(SPEC, Store(), Metrics(), clock=lambda: NOW).join(messages)  # type: ignore[arg-type]
    assert [r["label"] for r in classification.joined] == [0]
