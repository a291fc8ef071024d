"""Synthetic events for the producer, the demo and the load tests.

A spec may name a generator plugin as ``generator: "package.module:Class"``; the class is
built as ``Class(seed=..)`` and has ``next_event(now: datetime) -> dict``. Its module may also
define ``write_offline_data(repo_dir: Path) -> None``, which the demo calls to create the
feature repo's offline data when the training dataset is missing. Without a plugin, events
are drawn from the schema alone (random values within the declared ranges and categories).
"""

from __future__ import annotations

import importlib
import random
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import orjson

from streams.errors import SpecError
from streams.spec import FieldSpec, PipelineSpec


class EventGenerator(Protocol):
    def next_event(self, now: datetime) -> dict[str, Any]: ...


def _plugin(spec: PipelineSpec) -> tuple[ModuleType, str] | None:
    if spec.generator is None:
        return None
    module_name, _, attribute = spec.generator.partition(":")
    try:
        return importlib.import_module(module_name), attribute
    except ImportError as exc:
        msg = f"spec {spec.name}: generator module {module_name!r} cannot be imported: {exc}"
        raise SpecError(msg) from exc


def make_generator(spec: PipelineSpec, seed: int = 0) -> EventGenerator:
    plugin = _plugin(spec)
    if plugin is None:
        return SchemaGenerator(spec, seed)
    module, attribute = plugin
    factory = getattr(module, attribute, None)
    if factory is None:
        msg = f"spec {spec.name}: generator {spec.generator!r}: no {attribute!r} in module"
        raise SpecError(msg)
    generator: EventGenerator = factory(seed=seed)
    return generator


def offline_data_writer(spec: PipelineSpec) -> Callable[[Path], None] | None:
    """The plugin's ``write_offline_data`` if it has one."""
    plugin = _plugin(spec)
    if plugin is None:
        return None
    writer: Callable[[Path], None] | None = getattr(plugin[0], "write_offline_data", None)
    return writer


class SchemaGenerator:
    """Random events that satisfy the spec's schema; entity keys from a pool of 1,000."""

    def __init__(self, spec: PipelineSpec, seed: int = 0) -> None:
        self._spec = spec
        self._random = random.Random(seed)

    def next_event(self, now: datetime) -> dict[str, Any]:
        event = {
            name: self._value(name, field, now) for name, field in self._spec.event.fields.items()
        }
        event[self._spec.event.id_field] = str(uuid.UUID(int=self._random.getrandbits(128)))
        entity = self._spec.entity.field
        if self._spec.event.fields[entity].type == "int":
            event[entity] = self._random.randrange(1000)
        else:
            event[entity] = f"{entity}-{self._random.randrange(1000)}"
        return event

    def _value(self, name: str, field: FieldSpec, now: datetime) -> Any:
        r = self._random
        low = field.min if field.min is not None else 0.0
        high = field.max if field.max is not None else low + 100.0
        if field.type == "float":
            return r.uniform(low, high)
        if field.type == "int":
            return r.randint(int(low), int(high))
        if field.type == "bool":
            return r.random() < 0.5
        if field.type == "category":
            return r.choice(field.values or ("",))
        if field.type == "timestamp":
            return now.isoformat()
        return f"{name}-{r.randrange(1000)}"


def corrupt(event: dict[str, Any], spec: PipelineSpec, rng: random.Random) -> bytes:
    """One kind of bad input at random: not JSON, a missing required field, a wrong type or
    an out-of-range value. The producer's ``bad_rate`` uses it to exercise dead-lettering."""
    kind = rng.choice(("not_json", "missing_field", "wrong_type", "out_of_range"))
    fields = spec.event.fields
    if kind == "missing_field":
        required = [n for n, f in fields.items() if f.required and n != spec.event.id_field]
        if required:
            dropped = rng.choice(required)  # drawn once, not once per key
            return orjson.dumps({k: v for k, v in event.items() if k != dropped})
    if kind == "wrong_type":
        typed = [n for n, f in fields.items() if f.type in ("int", "float", "bool")]
        if typed:
            return orjson.dumps({**event, rng.choice(typed): "not-a-number"})
    if kind == "out_of_range":
        bounded = [n for n, f in fields.items() if f.max is not None]
        if bounded:
            name = rng.choice(bounded)
            return orjson.dumps({**event, name: (fields[name].max or 0) * 10 + 1})
    return b"{not json: " + orjson.dumps(event)[:40]
