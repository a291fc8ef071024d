"""The producer's drift switch: what `--drift` accepts, what it refuses (naming the field),
and that events change only once `--drift-after` has passed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli.drift_switch import DriftSwitch, apply_shifts, parse_shifts
from streams.cli.main import app
from streams.cli.producer import EventProducer
from streams.errors import DriftSwitchError
from streams.spec import load_spec

SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"
spec = load_spec(SPEC)
EVENT = spec.event


def event(**values: Any) -> dict[str, Any]:
    base = {"transaction_id": "t1", "card_id": "card-000001", "amount": 100.0,
            "merchant_category": "grocery", "channel": "chip", "is_foreign": False}  # fmt: skip
    return {**base, **values}


def test_scale_offset_and_pins_change_only_their_fields() -> None:
    shifts = parse_shifts(EVENT, ["amount=x3", "channel=online", "is_foreign=true"])
    assert apply_shifts(shifts, event()) == event(amount=300.0, channel="online", is_foreign=True)
    assert apply_shifts(parse_shifts(EVENT, ["amount=+25.5"]), event())["amount"] == 125.5
    assert apply_shifts(parse_shifts(EVENT, ["amount=-40"]), event())["amount"] == 60.0


def test_a_shifted_number_stays_within_the_declared_range() -> None:
    """amount: min 0.01, max 50,000: drifted events are drift, not dead letters."""
    assert apply_shifts(parse_shifts(EVENT, ["amount=x3"]), event(amount=20_000.0))["amount"] == (
        50_000.0
    )
    assert apply_shifts(parse_shifts(EVENT, ["amount=-500"]), event())["amount"] == 0.01


def test_an_int_field_stays_an_int() -> None:
    from streams.spec import EventSpec

    schema = EventSpec.model_validate(
        {"id_field": "id", "fields": {"id": {"type": "string"}, "n": {"type": "int", "max": 9}}}
    )
    shifted = apply_shifts(parse_shifts(schema, ["n=x1.5"]), {"id": "a", "n": 3})
    assert shifted == {"id": "a", "n": 4} or shifted == {"id": "a", "n": 5}
    assert isinstance(shifted["n"], int)
    assert apply_shifts(parse_shifts(schema, ["n=+100"]), {"id": "a", "n": 3})["n"] == 9


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("amout=x3", "field 'amout' is not in the spec's event schema"),
        ("channel=x2", "field 'channel' is a category field: only int and float"),
        ("event_time=+5", "field 'event_time' is a timestamp field"),
        ("card_id=x2", "field 'card_id' is a string field"),
        ("card_id=abc", "field 'card_id' is a string field"),
        ("transaction_id=x2", "field 'transaction_id' is the event id"),
        ("channel=carrier_pigeon", "'carrier_pigeon' is not one of field 'channel''s values"),
        ("is_foreign=maybe", "field 'is_foreign' is a bool"),
        ("amount=xthree", "'three' is not a number"),
        ("amount=x-1", "a factor is a finite number, 0 or more"),
        ("amount", "expected FIELD=xFACTOR"),
        ("amount=x2 amount=+1", None),
    ],
)
def test_refusals_name_the_flag_and_the_field(text: str, says: str | None) -> None:
    texts = text.split(" ")
    with pytest.raises(DriftSwitchError) as caught:
        parse_shifts(EVENT, texts)
    message = str(caught.value)
    assert message.startswith("--drift")
    assert (says or "field 'amount' is given more than once") in message


def test_the_switch_turns_on_after_its_seconds() -> None:
    now = [100.0]
    switch = DriftSwitch(parse_shifts(EVENT, ["amount=x2"]), after=10.0, clock=lambda: now[0])
    assert switch.apply(event())["amount"] == 100.0  # not started
    switch.start()
    now[0] = 109.9
    assert not switch.on and switch.apply(event())["amount"] == 100.0
    now[0] = 110.0
    assert switch.on and switch.apply(event())["amount"] == 200.0
    assert switch.describe() == "amount x2 after 10 s"
    with pytest.raises(DriftSwitchError, match="--drift-after"):
        DriftSwitch((), after=-1.0)


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.sent.append((topic, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def flush(self) -> None: ...

    async def stop(self) -> None: ...


class _Kafka:
    def __init__(self) -> None:
        self.made = _Producer()

    def producer(self, **_: Any) -> _Producer:
        return self.made

    async def start(self, _: Any) -> None: ...


async def test_the_producer_shifts_only_events_after_the_switch() -> None:
    kafka = _Kafka()
    switch = DriftSwitch(parse_shifts(EVENT, ["channel=online"]), after=0.15)
    producer = EventProducer(spec, kafka, rate=200.0, drift=switch)  # type: ignore[arg-type]
    await producer.run(asyncio.Event(), duration=0.4)
    channels = [orjson.loads(v)["channel"] for t, v in kafka.made.sent if t == spec.input.topic]
    first, last = channels[:20], channels[-20:]  # ~30 events before 0.15 s, ~50 after
    assert set(first) != {"online"}, first
    assert set(last) == {"online"}, last
    assert "drift on: channel = online after 0.15 s" in producer.progress_line()


def test_produce_refuses_a_bad_drift_before_connecting() -> None:
    result = CliRunner().invoke(
        app, ["produce", "--spec", str(SPEC), "--drift", "amout=x3"],
        env={"STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--drift amout=x3: field 'amout' is not in the spec's event schema" in result.output
