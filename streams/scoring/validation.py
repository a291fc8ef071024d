"""The decode stage: raw message bytes -> a validated ``Event``, or ``BadInput``.

Checks what the spec's event schema declares (required fields, types, ranges, categories,
timestamps) and what any later stage must be able to format and publish (``streams.scoring.limits``:
message size, id length, times within 1970..9999 UTC, ints within 64 bits), and nothing
more: undeclared fields pass through untouched.

>>> from streams.spec import EventSpec, FieldSpec
>>> schema = EventSpec(id_field="id", fields={"id": FieldSpec(type="string"),
...     "amount": FieldSpec(type="float", min=0)})
>>> validator = EventValidator(schema, entity_field="id")
>>> validator.parse(b'{"id": "e1", "amount": 3}', fallback_time=0.0).fields["amount"]
3.0
>>> validator.parse(b'{"id": "e1", "amount": -1}', fallback_time=0.0)
Traceback (most recent call last):
...
streams.errors.BadInput: decode: out_of_range: field 'amount': -1 is below min 0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.errors import BadInput
from streams.scoring.limits import TIME_RANGE_TEXT, InputLimits, time_in_range
from streams.spec import EventSpec, FieldSpec

STAGE = "decode"

# Ints are published as JSON numbers and read back by Feast as int64 join keys; orjson
# cannot encode an int beyond 64 bits, and a float such as 1e20 passes as an integral int.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(slots=True)
class Event:
    """One validated input event."""

    event_id: str
    entity_key: str | int  # as the event carries it: Feast join keys are typed
    time: float  # event time, epoch seconds
    fields: dict[str, Any]
    # Optional fields the event lacked (or had null), one bit each (``optional_bits``):
    # what data quality counts as missing. An int, not a set: most events lack none.
    absent: int = 0


def _bad(reason: str, detail: str) -> BadInput:
    return BadInput(STAGE, reason, detail)


def optional_bits(schema: EventSpec) -> dict[str, int]:
    """The bit of each optional field in ``Event.absent``, in schema order.

    >>> from streams.spec import FieldSpec
    >>> optional_bits(EventSpec(id_field="id", fields={"id": FieldSpec(type="string"),
    ...     "a": FieldSpec(type="int", required=False), "b": FieldSpec(type="bool")}))
    {'a': 1}
    """
    optional = [name for name, spec in schema.fields.items() if not spec.required]
    return {name: 1 << i for i, name in enumerate(optional)}


def _check_number(name: str, spec: FieldSpec, value: Any, kind: type) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad("wrong_type", f"field {name!r}: expected {spec.type}, got {_show(value)}")
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise _bad("wrong_type", f"field {name!r}: expected int, got {value!r}")
        value = int(value)
    if kind is int and not INT64_MIN <= value <= INT64_MAX:
        raise _bad("out_of_range", f"field {name!r}: {value!r} is outside the 64-bit int range")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad("out_of_range", f"field {name!r}: {value!r} is not finite")
    if spec.min is not None and value < spec.min:
        raise _bad("out_of_range", f"field {name!r}: {value!r} is below min {spec.min}")
    if spec.max is not None and value > spec.max:
        raise _bad("out_of_range", f"field {name!r}: {value!r} is above max {spec.max}")
    return kind(value)  # type: ignore[no-any-return]


def _check_string(name: str, spec: FieldSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("wrong_type", f"field {name!r}: expected string, got {_show(value)}")
    return value


def _check_category(name: str, spec: FieldSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("wrong_type", f"field {name!r}: expected category, got {_show(value)}")
    if value not in (spec.values or ()):
        allowed = list(spec.values or ())
        raise _bad("unknown_category", f"field {name!r}: {value!r} is not one of {allowed}")
    return value


def _check_bool(name: str, spec: FieldSpec, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad("wrong_type", f"field {name!r}: expected bool, got {_show(value)}")
    return value


def parse_timestamp(value: Any) -> float:
    """ISO 8601 string (naive means UTC) or epoch milliseconds -> epoch seconds."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return float(value) / 1000.0
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise ValueError(value)


def _check_timestamp(name: str, spec: FieldSpec, value: Any) -> Any:
    try:
        seconds = parse_timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        detail = f"field {name!r}: {_show(value)} is not ISO 8601 or epoch ms"
        raise _bad("bad_timestamp", detail) from exc
    if not time_in_range(seconds):
        detail = f"field {name!r}: {_show(value)} is outside {TIME_RANGE_TEXT} (in UTC)"
        raise _bad("out_of_range", detail)
    return value


_CHECKS: dict[str, Callable[[str, FieldSpec, Any], Any]] = {
    "string": _check_string,
    "int": lambda n, s, v: _check_number(n, s, v, int),
    "float": lambda n, s, v: _check_number(n, s, v, float),
    "bool": _check_bool,
    "category": _check_category,
    "timestamp": _check_timestamp,
}


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


WITHHELD = "value withheld (privacy)"


def _withheld(name: str, spec: FieldSpec, value: Any, reason: str) -> BadInput:
    """The error of a field the spec's privacy withholds: it names the field, not the value."""
    if reason == "wrong_type":
        what = f"expected {spec.type}, got {type(value).__name__}"
    else:
        what = reason.replace("_", " ")
    return _bad(reason, f"field {name!r}: {what}; {WITHHELD}")


class EventValidator:
    """Parses and checks one message against the event schema."""

    def __init__(
        self,
        schema: EventSpec,
        entity_field: str,
        limits: InputLimits | None = None,
        withheld: frozenset[str] = frozenset(),
    ) -> None:
        """``withheld``: fields whose values an error must not quote (the spec's privacy)."""
        self._schema = schema
        self._entity_field = entity_field
        self._limits = limits if limits is not None else InputLimits()
        self._withheld = withheld
        bits = optional_bits(schema)
        self._checks = [
            (name, spec, _CHECKS[spec.type], spec.required, spec.default, bits.get(name, 0))
            for name, spec in schema.fields.items()
        ]

    def parse(self, raw: bytes | None, fallback_time: float) -> Event:
        """Return the validated event; ``fallback_time`` is used when no time field is set."""
        if raw is None:
            raise _bad("not_json", "message has no value (tombstone)")
        self._limits.check_value(STAGE, raw)  # the key is the caller's to check
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad("not_json", f"not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            # An array or a string may hold any field's value: with privacy, name its type only.
            got = type(document).__name__ if self._withheld else _show(document)
            raise _bad("not_an_object", f"expected a JSON object, got {got}")
        absent = 0
        for name, spec, check, required, default, bit in self._checks:
            value = document.get(name)
            if value is None:
                if required:
                    raise _bad("missing_field", f"required field {name!r} is missing or null")
                absent |= bit
                if default is not None:
                    document[name] = default
                continue
            try:
                document[name] = check(name, spec, value)
            except BadInput as bad:
                if name in self._withheld:
                    hidden = _withheld(name, spec, value, bad.reason)
                    hidden.field = name
                    raise hidden from None
                bad.field = name
                raise
        schema = self._schema
        time_field = schema.time_field
        if time_field is not None and document.get(time_field) is not None:
            event_time = parse_timestamp(document[time_field])  # in range: checked above
        elif time_in_range(fallback_time):
            event_time = fallback_time
        else:
            when = f"Kafka timestamp {fallback_time!r} s"
            raise _bad("out_of_range", f"the message's {when} is outside {TIME_RANGE_TEXT}")
        # Both may be declared optional without a default: then an event can lack them.
        if document.get(schema.id_field) is None:
            raise _bad("missing_field", f"event id field {schema.id_field!r} is missing or null")
        if document.get(self._entity_field) is None:
            detail = f"entity key field {self._entity_field!r} is missing or null"
            raise _bad("missing_field", detail)
        event_id = str(document[schema.id_field])
        withheld = self._withheld
        what = f"event id field {schema.id_field!r}"
        self._limits.check_id(STAGE, what, event_id, show=schema.id_field not in withheld)
        entity_key = document[self._entity_field]
        if isinstance(entity_key, str):
            what = f"entity key field {self._entity_field!r}"
            show = self._entity_field not in withheld
            self._limits.check_id(STAGE, what, entity_key, required=False, show=show)
        return Event(
            event_id=event_id, entity_key=entity_key, time=event_time, fields=document,
            absent=absent,
        )  # fmt: skip
