"""Drift on purpose: the producer shifts chosen event fields after some seconds, so that the
drift monitor, its alerts and the demo's summary can be seen reacting.

``--drift FIELD=xFACTOR`` multiplies a numeric field, ``FIELD=+OFFSET`` (or ``-OFFSET``)
adds to it, ``FIELD=VALUE`` pins a category or bool field to one of its values. A shifted
number is kept inside the field's declared ``min``/``max`` (an int is rounded), so drifted
events stay valid: they show as drift, not as dead letters. Labels are the generator's
ground truth for the event as it was drawn, before the shift.

>>> from streams.spec import EventSpec
>>> event = EventSpec.model_validate({"id_field": "id", "fields": {
...     "id": {"type": "string"}, "amount": {"type": "float", "min": 0, "max": 100},
...     "channel": {"type": "category", "values": ["chip", "online"]}}})
>>> shifts = parse_shifts(event, ["amount=x3", "channel=online"])
>>> [s.describe() for s in shifts]
['amount x3', 'channel = online']
>>> apply_shifts(shifts, {"id": "e1", "amount": 40.0, "channel": "chip"})
{'id': 'e1', 'amount': 100.0, 'channel': 'online'}
>>> try:
...     parse_shifts(event, ["x=online"])
... except DriftSwitchError as refused:
...     print(refused)
--drift x=online: field 'x' is not in the spec's event schema (id, amount, channel)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from streams.errors import DriftSwitchError
from streams.spec import EventSpec, FieldSpec

Kind = Literal["scale", "offset", "pin"]
NUMERIC = ("int", "float")
PINNABLE = ("category", "bool")


@dataclass(frozen=True)
class Shift:
    """One field's change: ``scale`` (multiply), ``offset`` (add) or ``pin`` (a value)."""

    field: str
    kind: Kind
    value: float | str | bool
    field_spec: FieldSpec

    def describe(self) -> str:
        if self.kind == "scale":
            return f"{self.field} x{self.value:g}"
        if self.kind == "offset":
            return f"{self.field} {float(self.value):+g}"
        pinned = str(self.value).lower() if isinstance(self.value, bool) else self.value
        return f"{self.field} = {pinned}"

    def apply(self, value: Any) -> Any:
        if self.kind == "pin":
            return self.value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return value  # the generator left it out or made it something else: untouched
        change = float(self.value)
        number = float(value) * change if self.kind == "scale" else float(value) + change
        low, high = self.field_spec.min, self.field_spec.max
        number = max(number, low) if low is not None else number
        number = min(number, high) if high is not None else number
        return round(number) if self.field_spec.type == "int" else float(number)


def parse_shift(event: EventSpec, text: str) -> Shift:
    """One ``FIELD=xFACTOR``, ``FIELD=+OFFSET`` / ``FIELD=-OFFSET`` or ``FIELD=VALUE``."""
    name, sep, change = text.partition("=")
    name, change = name.strip(), change.strip()

    def refuse(why: str) -> DriftSwitchError:
        return DriftSwitchError(f"--drift {text}: {why}")

    if not sep or not name or not change:
        msg = "expected FIELD=xFACTOR, FIELD=+OFFSET or FIELD=VALUE (e.g. amount=x3)"
        raise refuse(msg)
    spec = event.fields.get(name)
    if spec is None:
        msg = f"field {name!r} is not in the spec's event schema ({', '.join(event.fields)})"
        raise refuse(msg)
    if name == event.id_field:
        msg = f"field {name!r} is the event id: shifting it changes no distribution"
        raise refuse(msg)
    numeric_change = change[0] in "x+-"
    if numeric_change:
        if spec.type not in NUMERIC:
            msg = (
                f"field {name!r} is a {spec.type} field: only int and float fields can be"
                " scaled (xFACTOR) or offset (+OFFSET)"
            )
            raise refuse(msg)
        number_text = change[1:] if change[0] == "x" else change
        try:
            number = float(number_text)
        except ValueError:
            msg = f"{number_text!r} is not a number"
            raise refuse(msg) from None
        if not math.isfinite(number) or (change[0] == "x" and number < 0):
            msg = f"{number_text!r}: a factor is a finite number, 0 or more"
            raise refuse(msg)
        return Shift(name, "scale" if change[0] == "x" else "offset", number, spec)
    if spec.type == "category":
        if change not in (spec.values or ()):
            values = ", ".join(spec.values or ())
            msg = f"{change!r} is not one of field {name!r}'s values ({values})"
            raise refuse(msg)
        return Shift(name, "pin", change, spec)
    if spec.type == "bool":
        if change.lower() not in ("true", "false"):
            msg = f"field {name!r} is a bool: pin it to true or false, not {change!r}"
            raise refuse(msg)
        return Shift(name, "pin", change.lower() == "true", spec)
    msg = (
        f"field {name!r} is a {spec.type} field: xFACTOR/+OFFSET need an int or float field,"
        " a pinned VALUE a category or bool one"
    )
    raise refuse(msg)


def parse_shifts(event: EventSpec, texts: Iterable[str]) -> tuple[Shift, ...]:
    """Every ``--drift``; a field given twice is refused (which one would win?)."""
    shifts = tuple(parse_shift(event, text) for text in texts)
    fields = [shift.field for shift in shifts]
    if twice := sorted({f for f in fields if fields.count(f) > 1}):
        msg = f"--drift: field {twice[0]!r} is given more than once"
        raise DriftSwitchError(msg)
    return shifts


def apply_shifts(shifts: Sequence[Shift], event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with every shift applied (in place, and returned)."""
    for shift in shifts:
        if shift.field in event or shift.kind == "pin":
            event[shift.field] = shift.apply(event.get(shift.field))
    return event


@dataclass
class DriftSwitch:
    """The shifts, on from ``after`` seconds past ``start()`` (the producer's start)."""

    shifts: tuple[Shift, ...]
    after: float
    clock: Callable[[], float] = time.monotonic
    _started: float | None = None

    def __post_init__(self) -> None:
        if not self.after >= 0:
            msg = f"--drift-after: seconds must be 0 or more, got {self.after:g}"
            raise DriftSwitchError(msg)

    def start(self) -> None:
        self._started = self.clock()

    @property
    def on(self) -> bool:
        return self._started is not None and self.clock() - self._started >= self.after

    def describe(self) -> str:
        return f"{', '.join(s.describe() for s in self.shifts)} after {self.after:g} s"

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        return apply_shifts(self.shifts, event) if self.on else event
