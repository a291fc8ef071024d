"""River state as plain data: what a River object has learned, exported to JSON-able values
and restored into a fresh object that our code built.

Snapshots travel through Redis, which others may be able to write, and unpickling runs
code. So the data holds only None, booleans, numbers, strings and containers of them, and
it never chooses what gets built: the object graph comes from our code (the estimator built
from the spec) and, where River grows its graph while learning (tree nodes, per-feature
splitters, per-class distributions), from the calls River itself makes at that position
(``models.river_graph`` holds that knowledge of River).
Restoring walks the fresh object and the data together and refuses, naming the position,
anything that does not fit: another class, a missing or unexpected attribute, a value of
another kind.

Encoding: ``{"objects": [[class, {attribute: value}], ...]}``, the exported object first.
Objects are listed flat and referred to by index, so a deep tree does not nest deeply (JSON
encoders limit nesting). ``class`` is ``module.Class``, only ever compared with the fresh
object's class, never imported. In values, None, bool, int, str and finite floats stand
for themselves; every other value is a JSON array whose first item names its kind, from a
closed set:

- ``["object", index]``: the object at ``index`` in ``objects``;
- ``["float", "nan" | "inf" | "-inf"]``;
- ``["list" | "tuple" | "set" | "deque", [items]]``;
- ``["dict", [[key, value], ...]]`` for dict, OrderedDict, defaultdict, Counter and River's
  VectorDict: keys keep their type and the order is kept (River sums weights in key order,
  so the order matters to the last bit). The container type, a defaultdict's factory and a
  deque's ``maxlen`` come from the fresh object, never from the data.

>>> from river import preprocessing
>>> scaler = preprocessing.StandardScaler()
>>> scaler.learn_one({"amount": 10.0})
>>> data = export_state(scaler)
>>> name, attributes = data["objects"][0]
>>> name, attributes["means"]
('river.preprocessing.scale.StandardScaler', ['dict', [['amount', 10.0]]])
>>> restored = restore_state(preprocessing.StandardScaler(), data)
>>> restored.means == scaler.means
True
>>> restore_state(preprocessing.MinMaxScaler(), data, "model")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
models.river_state.StateError: model: holds an object ...StandardScaler where ...MinMaxScaler
"""

from __future__ import annotations

import collections
import math
from typing import Any, TypeVar

import orjson

from models import river_graph
from models.errors import ModelError

T = TypeVar("T")
Data = Any  # JSON-able: None, bool, int, float, str, lists and str-keyed dicts of those
# Where a value is, built only when an error names it: a root name, or (parent, step) with
# step ".attribute" or a (key,) / (index,) one-tuple.
Path = str | tuple[Any, Any]

_SCALARS = (bool, int, float, str)
_MAPPINGS = (dict, collections.OrderedDict, collections.defaultdict, collections.Counter)
_SEQUENCES: dict[str, type] = {
    "list": list,
    "tuple": tuple,
    "set": set,
    "deque": collections.deque,
}
_SEQUENCE_KINDS = {container: kind for kind, container in _SEQUENCES.items()}
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class StateError(ModelError):
    """State data does not fit the object it is restored into (or an object holds something
    that is not data). ``path`` locates the value, e.g. ``model.steps['StandardScaler']``."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = _text(path)
        super().__init__(f"{self.path}: {detail}")


def export_state(obj: object, path: str = "state") -> Data:
    """``obj``'s attributes and those of every object they reach, as data (see the module
    docstring). Raises ``StateError`` on anything that is not data, and on an object or
    container reached twice (restoring would split what was shared), except the references
    River re-creates itself (``river_graph.not_state``)."""
    exporter = _Exporter()
    try:
        exporter.value(obj, path)
        exporter.run()
    except RecursionError as exc:
        raise StateError(path, "nested too deeply to export") from exc
    return {"objects": exporter.objects}


def restore_state(fresh: T, data: Data, path: str = "state") -> T:
    """``fresh`` (an object our code built, e.g. from the spec) with ``data``'s state, in
    place where the graph already exists; returns it. Raises ``StateError`` at the first
    value that does not fit."""
    objects = data.get("objects") if isinstance(data, dict) else None
    if not (isinstance(objects, list) and objects and set(data) == {"objects"}):
        raise StateError(path, f"is not state data: {_show(data)}")
    restorer = _Restorer(objects)
    try:
        restored: T = restorer.object(fresh, 0, path, _ROOT)
        restorer.run()
    except RecursionError as exc:
        raise StateError(path, "nested too deeply to restore") from exc
    if len(restorer.used) != len(objects):
        raise StateError(path, f"{len(objects) - len(restorer.used)} objects are not used")
    return restored


# -- export ------------------------------------------------------------------------------


class _Exporter:
    """Objects are exported from a queue, not by recursion: a tree as deep as River lets
    it grow needs no deeper Python stack than a shallow one."""

    def __init__(self) -> None:
        self.objects: list[list[Any]] = []
        self.seen: dict[int, Path] = {}
        self.pending: collections.deque[tuple[int, object, Path]] = collections.deque()

    def run(self) -> None:
        while self.pending:
            index, obj, path = self.pending.popleft()
            skipped = river_graph.not_state(obj)
            self.objects[index][1] = {
                name: self.value(v, (path, f".{name}"))
                for name, v in vars(obj).items()
                if name not in skipped
            }

    def value(self, value: object, path: Path) -> Data:
        cls = type(value)
        if value is None or cls in (bool, int, str):
            return value
        if cls is float:
            number: float = value  # type: ignore[assignment]
            if math.isfinite(number):
                return number
            return ["float", "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")]
        if cls is not tuple:  # immutable: sharing a tuple changes nothing
            first = self.seen.setdefault(id(value), path)
            if first is not path:
                msg = f"is the value already exported at {_text(first)}: shared state is not data"
                raise StateError(path, msg)
        if cls in _MAPPINGS or cls is river_graph.vector_dict():
            items: Any = value
            return ["dict", [[self.value(k, (path, " key")), self.value(v, (path, (k,)))]
                             for k, v in items.items()]]  # fmt: skip
        kind = _SEQUENCE_KINDS.get(cls)
        if kind is not None:
            items = value
            exported = [self.value(v, (path, (i,))) for i, v in enumerate(items)]
            if kind == "set":  # iteration order follows the string hash seed: make it canonical
                exported.sort(key=orjson.dumps)
            return [kind, exported]
        if _is_object(value):
            index = len(self.objects)
            self.objects.append([_class_name(value), {}])
            self.pending.append((index, value, path))
            return ["object", index]
        raise StateError(path, f"holds a {_class_name(value)}, which is not data")


# -- restore -----------------------------------------------------------------------------


class _Slot:
    """Where a value lives: its owner object, the owner's attribute, and the objects above
    (the owner's owners), so River's factories can be found, e.g. the tree of a node."""

    def __init__(self, owner: object, attribute: str, owners: tuple[object, ...]) -> None:
        self.owner = owner
        self.attribute = attribute
        self.owners = owners


_ROOT = _Slot(None, "", ())


class _Restorer:
    """Like the export, objects are filled from a queue: a deep tree needs no deep stack.
    An object is built (or found in the fresh graph) and checked where it is referred to,
    and its attributes are filled when its turn comes."""

    def __init__(self, objects: list[Any]) -> None:
        self.objects = objects
        self.used: set[int] = set()
        self.pending: collections.deque[tuple[Any, dict[str, Any], Path, tuple[object, ...]]]
        self.pending = collections.deque()

    def run(self) -> None:
        while self.pending:
            obj, attributes, path, owners = self.pending.popleft()
            state = vars(obj)
            for attribute, value in attributes.items():
                inner, where = _Slot(obj, attribute, owners), (path, f".{attribute}")
                state[attribute] = self.value(state[attribute], value, where, inner)

    def value(self, fresh: Any, data: Data, path: Path, slot: _Slot) -> Any:
        cls = type(data)
        if cls in _SCALARS or data is None:
            if cls is type(fresh):  # the common case, fast
                return data
            return _scalar(fresh, data, path, slot)
        if cls is not list or len(data) != 2 or type(data[0]) is not str:
            raise StateError(path, f"is not state data: {_show(data)}")
        kind, content = data
        if kind == "object" and type(content) is int:
            return self.object(fresh, content, path, slot)
        if kind == "float" and content in _NON_FINITE:
            return _scalar(fresh, _NON_FINITE[content], path, slot)
        if kind == "dict" and type(content) is list:
            return self.mapping(fresh, content, path, slot)
        if kind in _SEQUENCES and type(content) is list:
            return self.sequence(fresh, kind, content, path, slot)
        raise StateError(path, f"is not state data: {_show(data)}")

    def object(self, fresh: Any, index: int, path: Path, slot: _Slot) -> Any:
        if not 0 <= index < len(self.objects) or index in self.used:
            raise StateError(path, f"refers to object {index}, missing or already used")
        self.used.add(index)
        entry = self.objects[index]
        if not (type(entry) is list and len(entry) == 2 and type(entry[0]) is str):
            raise StateError(path, f"object {index} is not [class, attributes]")
        name, attributes = entry
        if fresh is None:
            fresh = _new_object(name, path, slot)
        if _class_name(fresh) != name or not _is_object(fresh):
            raise _mismatch(path, f"an object {name}", fresh)
        if type(attributes) is not dict:
            raise StateError(path, f"attributes of {name} are not a mapping")
        expected = vars(fresh).keys() - river_graph.not_state(fresh)
        if attributes.keys() != expected:
            missing = sorted(expected - attributes.keys())
            unexpected = sorted(attributes.keys() - expected)
            detail = f"{name} attributes do not match: missing {missing}, unexpected {unexpected}"
            raise StateError(path, detail)
        self.pending.append((fresh, attributes, path, (*slot.owners, fresh)))
        return fresh

    def mapping(self, fresh: Any, pairs: list[Any], path: Path, slot: _Slot) -> Any:
        vector = river_graph.vector_dict()
        if fresh is not None and type(fresh) not in _MAPPINGS and type(fresh) is not vector:
            raise _mismatch(path, "a mapping", fresh)
        values: dict[Any, Any] = {}
        for pair in pairs:
            if not (type(pair) is list and len(pair) == 2):
                raise StateError(path, f"a mapping entry is not a [key, value] pair: {_show(pair)}")
            key = self.key(pair[0], (path, " key"))
            if key in values:
                raise StateError(path, f"a mapping has the key {key!r} twice")
            values[key] = self.value(_fresh_entry(fresh, key), pair[1], (path, (key,)), slot)
        if type(fresh) is vector:  # refilled in place: it keeps its initializer
            weights: Any = fresh
            weights.clear()
            weights.update(values)
            return weights
        out: Any
        if type(fresh) is collections.defaultdict:
            out = collections.defaultdict(fresh.default_factory)
        else:
            out = {} if fresh is None else type(fresh)()
        for key, value in values.items():  # item by item: Counter.update would count pairs
            out[key] = value
        return out

    def sequence(self, fresh: Any, kind: str, items: list[Any], path: Path, slot: _Slot) -> Any:
        container = _SEQUENCES[kind]
        if fresh is not None and type(fresh) is not container:
            raise _mismatch(path, f"a {kind}", fresh)
        prototype: Any = fresh  # a list, tuple, set or deque (mypy narrows it to object)
        if kind == "set":
            return {self.key(item, (path, (i,))) for i, item in enumerate(items)}
        prototypes = list(prototype) if prototype is not None else []
        values = [
            self.value(prototypes[i] if i < len(prototypes) else None, item, (path, (i,)), slot)
            for i, item in enumerate(items)
        ]
        if kind == "deque":
            maxlen: int | None = prototype.maxlen if prototype is not None else None
            if maxlen is not None and len(values) > maxlen:
                raise StateError(path, f"holds {len(values)} items, the model's window is {maxlen}")
            return collections.deque(values, maxlen=maxlen)
        return container(values)

    def key(self, data: Data, path: Path) -> Any:
        """A mapping key or set item: a scalar, or a tuple of scalars."""
        value = self.value(None, data, path, _ROOT)
        items = value if type(value) is tuple else (value,)
        if not all(v is None or type(v) in _SCALARS for v in items):
            raise StateError(path, f"is not a usable key: {_show(data)}")
        return value


def _scalar(fresh: Any, value: Any, path: Path, slot: _Slot) -> Any:
    if value is None:
        if fresh is None or river_graph.nullable(slot.owner, slot.attribute):
            return None
        raise _mismatch(path, "null", fresh)
    if fresh is not None and _kind(fresh) != _kind(value):
        raise _mismatch(path, _show(value), fresh)
    return value


def _mismatch(path: Path, what: str, fresh: object) -> StateError:
    return StateError(
        path, f"holds {what} where the model built from the spec has a {_class_name(fresh)}"
    )


def _fresh_entry(fresh: Any, key: Any) -> Any:
    """The fresh object's value at ``key``, or what River would put there for a new key:
    a defaultdict's default, a Counter's or VectorDict's zero, else nothing (River's
    factories may still build one)."""
    if fresh is None:
        return None
    if key in fresh:
        return fresh[key]
    if type(fresh) is collections.defaultdict and fresh.default_factory is not None:
        return fresh.default_factory()
    if type(fresh) is collections.Counter:
        return 0
    if type(fresh) is river_graph.vector_dict():
        return 0.0
    return None


def _new_object(name: str, path: Path, slot: _Slot) -> object:
    """An object River builds at ``slot`` while learning, chosen among the kinds River
    builds there by the class name the data records: the data picks, never names, a class."""
    for cls, build in river_graph.built_at(slot.owner, slot.attribute, slot.owners):
        if _qualified(cls) == name:
            return build()
    detail = f"holds a {name}, which the model built from the spec never creates here"
    raise StateError(path, detail)


def _is_object(value: object) -> bool:
    """An object whose attributes are state (not a container, which has a kind of its own,
    nor a class)."""
    cls = type(value)
    if cls in _MAPPINGS or cls in _SEQUENCE_KINDS or cls is river_graph.vector_dict():
        return False
    return hasattr(value, "__dict__") and not isinstance(value, type)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"  # River turns an int counter into a float as it learns
    if isinstance(value, str):
        return "str"
    return _class_name(value)


def _class_name(value: object) -> str:
    return _qualified(type(value))


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _show(data: Data) -> str:
    text = repr(data)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _text(path: Path) -> str:
    steps: list[str] = []
    while isinstance(path, tuple):
        path, step = path
        steps.append(f"[{step[0]!r}]" if isinstance(step, tuple) else step)
    return path + "".join(reversed(steps))


__all__ = ["Data", "StateError", "export_state", "restore_state"]
