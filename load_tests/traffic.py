"""What the load generator offers: a pre-serialized event pool, arrival patterns, ids, times.

Events are generated once (the spec's generator plugin, as the demo producer uses) and kept
as JSON bytes with two holes, the event id and the event time, filled at send time by
joining byte strings. So the generator spends about a microsecond per event, not the
~30 µs of building and serializing an event, and can offer rates the pipeline cannot take.

Event ids encode where they belong: ``phase * ID_SPACE + seq``. An output record's Kafka
key (the event id for predictions, the original key for dead letters and pass-through
copies) is therefore enough to tell which input it answers, without parsing its JSON.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from streams.cli.generators import corrupt, make_generator
from streams.errors import BadInput
from streams.scoring.validation import EventValidator, parse_timestamp
from streams.spec import PipelineSpec

ID_SPACE = 10**9
VALID, BAD, UNKNOWN = "v", "b", "u"
_ID_MARK = "@@ID@@"
_TIME_MARK = "@@TIME@@"
_ID_SLOT, _TIME_SLOT = 0, 1


@dataclass(frozen=True)
class Mix:
    """Shares of deliberately invalid events and events for entities the store lacks."""

    bad: float = 0.01
    unknown: float = 0.01

    def __post_init__(self) -> None:
        if self.bad < 0 or self.unknown < 0 or self.bad + self.unknown > 1:
            msg = f"event mix: bad {self.bad} + unknown {self.unknown} must be within [0, 1]"
            raise ValueError(msg)


@dataclass(frozen=True)
class Template:
    """One pre-serialized event: literal pieces with the id and time holes between them."""

    pieces: tuple[bytes, ...]
    holes: tuple[tuple[int, int], ...]  # (index into pieces, _ID_SLOT or _TIME_SLOT)
    kind: str
    label: int

    def render(self, event_id: bytes, event_time: bytes) -> bytes:
        out = list(self.pieces)
        for index, slot in self.holes:
            out[index] = event_id if slot == _ID_SLOT else event_time
        return b"".join(out)


def build_pool(spec: PipelineSpec, mix: Mix, size: int, seed: int) -> list[Template]:
    """``size`` events drawn from the spec's generator; a share ``mix.bad`` corrupted (the
    producer's own ``corrupt``), a share ``mix.unknown`` keyed by entities nobody stored."""
    generator = make_generator(spec, seed)
    labelled = getattr(generator, "next_labelled", None)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    id_quoted = spec.event.fields[spec.event.id_field].type != "int"
    validator = EventValidator(spec.event, entity_field=spec.entity.field)
    pool = []
    for _ in range(size):
        if labelled is not None:
            event, label = labelled(now)
        else:
            event, label = generator.next_event(now), int(rng.random() < 0.05)
        event[spec.event.id_field] = _ID_MARK
        if spec.event.time_field is not None:
            event[spec.event.time_field] = _TIME_MARK
        draw = rng.random()
        if draw < mix.bad:
            pool.append(_template(_corrupted(event, spec, rng, validator), BAD, label, id_quoted))
            continue
        kind = VALID
        if draw < mix.bad + mix.unknown:
            kind = UNKNOWN
            event[spec.entity.field] = _unknown_key(spec, rng)
        pool.append(_template(orjson.dumps(event), kind, int(label), id_quoted))
    return pool


def _corrupted(
    event: dict[str, Any], spec: PipelineSpec, rng: random.Random, validator: EventValidator
) -> bytes:
    """``corrupt``'s output, drawn again until the pipeline's validator rejects it: its
    missing-field case can remove no field at all and return a valid event."""
    sample = {**event, spec.event.id_field: "x"}
    if spec.event.time_field is not None:
        sample[spec.event.time_field] = datetime.now(UTC).isoformat()
    for _ in range(50):
        state = rng.getstate()
        try:
            validator.parse(corrupt(dict(sample), spec, rng), 0.0)
        except BadInput:
            rng.setstate(state)
            return corrupt(dict(event), spec, rng)
    return b"{not json"


def _unknown_key(spec: PipelineSpec, rng: random.Random) -> Any:
    if spec.event.fields[spec.entity.field].type == "int":
        return 10**12 + rng.randrange(10**9)
    return f"loadtest-unknown-{rng.randrange(10**9):09d}"


def _template(raw: bytes, kind: str, label: int, id_quoted: bool) -> Template:
    # The id hole keeps its quotes for string ids; an int id is spliced bare.
    id_mark = f'"{_ID_MARK}"'.encode()
    time_mark = f'"{_TIME_MARK}"'.encode()
    pieces: list[bytes] = []
    holes: list[tuple[int, int]] = []
    rest = raw
    while True:
        found = [(rest.find(m), m, s) for m, s in ((id_mark, _ID_SLOT), (time_mark, _TIME_SLOT))]
        found = [f for f in found if f[0] >= 0]
        if not found:
            break
        at, mark, slot = min(found)
        pieces.append(rest[:at])
        holes.append((len(pieces), slot))
        pieces.append(b"")
        rest = rest[at + len(mark) :]
        if slot == _ID_SLOT and id_quoted or slot == _TIME_SLOT:
            pieces[-2] += b'"'
            rest = b'"' + rest
    pieces.append(rest)
    return Template(tuple(pieces), tuple(holes), kind, label)


def event_id(phase: int, seq: int) -> int:
    return phase * ID_SPACE + seq


def label_record(event_id_bytes: bytes, label: int, label_time: bytes, id_quoted: bool) -> bytes:
    """The label message: ``{"event_id", "label", "label_time"}``."""
    quoted = b'"' + event_id_bytes + b'"' if id_quoted else event_id_bytes
    return b'{"event_id":%s,"label":%d,"label_time":"%s"}' % (quoted, label, label_time)


class IsoFormatter:
    """Epoch seconds -> b'YYYY-MM-DDTHH:MM:SS.ffffff+00:00', the date part cached per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self, epoch: float) -> bytes:
        second = int(epoch)
        if second != self._second:
            self._second = second
            moment = datetime.fromtimestamp(second, tz=UTC)
            self._prefix = moment.strftime("%Y-%m-%dT%H:%M:%S.").encode()
        return self._prefix + b"%06d+00:00" % int((epoch - second) * 1e6)


class TimeParser:
    """ISO 8601 UTC bytes (``...Z`` or ``...+00:00``) -> epoch seconds, seconds cached."""

    def __init__(self) -> None:
        self._cache: dict[bytes, float] = {}

    def __call__(self, text: bytes) -> float:
        head, tail = text[:19], text[19:]
        if tail.endswith(b"Z"):
            fraction = tail[:-1]
        elif tail.endswith(b"+00:00"):
            fraction = tail[:-6]
        else:  # another offset or no zone: the slow, general path
            return parse_timestamp(text.decode())
        base = self._cache.get(head)
        if base is None:
            base = self._cache[head] = parse_timestamp(head.decode() + "+00:00")
        if fraction.startswith(b".") and fraction[1:].isdigit():
            digits = fraction[1:]
            return base + int(digits) / 10 ** len(digits)
        return base if not fraction else parse_timestamp(text.decode())


# --- arrivals ---------------------------------------------------------------------------

PatternKind = Literal["constant", "poisson", "bursts"]


@dataclass(frozen=True)
class Pattern:
    """Offered load: ``rate`` events/s, evenly spaced (constant) or Poisson; ``bursts`` is
    Poisson at ``rate`` with ``burst_seconds`` at ``burst_rate`` every ``period`` seconds."""

    kind: PatternKind
    rate: float
    burst_rate: float = 0.0
    burst_seconds: float = 0.0
    period: float = 0.0

    def describe(self) -> str:
        if self.kind == "bursts":
            return (
                f"bursts {self.rate:,.0f}/s with {self.burst_seconds:g} s at"
                f" {self.burst_rate:,.0f}/s every {self.period:g} s"
            )
        return f"{self.kind} {self.rate:,.0f}/s"


def arrivals(pattern: Pattern, duration: float, seed: int) -> npt.NDArray[np.float64]:
    """Sorted arrival offsets (seconds from the phase start) within ``duration``."""
    rng = np.random.default_rng(seed)
    if pattern.kind == "constant":
        n = int(pattern.rate * duration)
        return np.arange(n, dtype=np.float64) / pattern.rate
    if pattern.kind == "poisson":
        return _poisson(rng, pattern.rate, 0.0, duration)
    segments = []
    start = 0.0
    while start < duration:
        burst_end = min(start + pattern.burst_seconds, duration)
        segments.append(_poisson(rng, pattern.burst_rate, start, burst_end))
        period_end = min(start + pattern.period, duration)
        segments.append(_poisson(rng, pattern.rate, burst_end, period_end))
        start += pattern.period
    return np.concatenate(segments) if segments else np.empty(0)


def _poisson(rng: np.random.Generator, rate: float, start: float, end: float) -> Any:
    if rate <= 0 or end <= start:
        return np.empty(0)
    expected = rate * (end - start)
    gaps = rng.exponential(1.0 / rate, size=int(expected + 6 * expected**0.5 + 16))
    times = start + np.cumsum(gaps)
    return times[times < end]
