"""Fuzzed events and malformed labels, drawn by Hypothesis, sent straight to a running system.

Every event is keyed (and, where it is an object, identified) by a number the output meter
maps back to its input (load_tests/traffic.py's id space), so each one is counted as
predicted, dead-lettered, lost or duplicated like generated traffic. Labels end in the label
join's own counters (joined, late, orphan, duplicate, invalid), read from the learning
worker's /metrics; the invalid ones are also dead letters.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from load_tests.faults.scenarios import Outcome
from load_tests.steps import System
from load_tests.traffic import ID_SPACE
from streams.cli.generators import make_generator
from streams.runtime.connections import KafkaConnection
from streams.spec import PipelineSpec

# Any JSON value, including what orjson refuses (ints past 64 bits) and what JSON itself
# does not allow (NaN and infinities, written as the bare tokens Python's json writes).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def fuzzed_events(spec: PipelineSpec, count: int, seed: int = 7) -> list[bytes | dict[str, Any]]:
    """``count`` messages: valid events with fields replaced, removed or added, any JSON
    document, raw bytes. Dicts are events whose id the caller sets; bytes are sent as is."""
    generator = make_generator(spec, seed=seed)
    base = [generator.next_event(datetime.now(UTC)) for _ in range(64)]
    fields = [name for name in spec.event.fields if name != spec.event.id_field]
    event = st.sampled_from(base)
    replaced = st.builds(
        lambda e, values: {**e, **values},
        event,
        st.dictionaries(st.sampled_from(fields), JSON_VALUES, min_size=1, max_size=3),
    )
    removed = st.builds(
        lambda e, gone: {k: v for k, v in e.items() if k not in gone},
        event,
        st.sets(st.sampled_from(fields), min_size=1, max_size=3),
    )
    extra = st.builds(
        lambda e, more: {**more, **e},
        event,
        st.dictionaries(st.text(min_size=1, max_size=12), JSON_VALUES, max_size=3),
    )
    documents = JSON_VALUES.map(lambda value: json.dumps(value).encode())
    messages = st.one_of(replaced, removed, extra, documents, st.binary(max_size=300), event)
    return _draw(messages, count)


def malformed_labels(count: int) -> list[bytes]:
    """Label messages that are wrong in every way a producer could get them wrong."""
    label_like = st.fixed_dictionaries(
        {},
        optional={
            "event_id": JSON_VALUES,
            "label": JSON_VALUES,
            "label_time": st.one_of(JSON_VALUES, st.integers(min_value=-(2**70), max_value=2**70)),
        },
    ).map(lambda doc: json.dumps(doc).encode())
    documents = JSON_VALUES.map(lambda value: json.dumps(value).encode())
    return _draw(st.one_of(label_like, documents, st.binary(max_size=200)), count)


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(message: Any) -> None:
        drawn.append(message)

    collect()
    # Hypothesis may stop early once it has explored a small space; repeat to fill.
    while drawn and len(drawn) < count:
        drawn.extend(drawn[: count - len(drawn)])
    return drawn[:count]


def keyed(spec: PipelineSpec, phase: int, messages: list[Any]) -> list[tuple[bytes, bytes]]:
    """(key, value) per message; an event object's id is its key, as the meter expects."""
    out = []
    for seq, message in enumerate(messages):
        key = str(phase * ID_SPACE + seq)
        if isinstance(message, dict):
            value = json.dumps({**message, spec.event.id_field: key}).encode()
        else:
            value = message
        out.append((key.encode(), value))
    return out


async def send(kafka: KafkaConnection, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = kafka.producer(linger_ms=5)
    await kafka.start(producer)
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def run_fuzz(
    system: System, kafka: KafkaConnection, events: int, labels: int, phase: int
) -> list[Outcome]:
    """Send fuzzed events and malformed labels; count what came out of each."""
    spec = system.variant.spec
    event_messages = keyed(spec, phase, fuzzed_events(spec, events))
    label_messages = [
        (str((phase + 1) * ID_SPACE + seq).encode(), value)
        for seq, value in enumerate(malformed_labels(labels))
    ]
    started = time.monotonic()
    await send(kafka, spec.input.topic, event_messages)
    labels_topic, _ = system.variant.labels_topic
    await send(kafka, labels_topic, label_messages)
    tally = system.meter.tally(phase)
    deadline = time.monotonic() + 120
    while tally.missing(len(event_messages)) and time.monotonic() < deadline:
        system.check_running()
        await asyncio.sleep(0.25)
    counted = await _labels_counted(system, len(label_messages), deadline)
    system.check_running()  # the workers survived all of it
    elapsed = round(time.monotonic() - started, 1)
    label_tally = system.meter.tally(phase + 1)
    return [
        Outcome(
            scenario=f"{events:,} fuzzed events (Hypothesis)", inputs=len(event_messages),
            predicted=tally.predictions, dead_lettered=tally.dead_letters,
            lost=tally.missing(len(event_messages)), duplicated=tally.duplicates,
            recovery_seconds=None, note=f"all out in {elapsed} s; workers kept running",
        ),
        Outcome(
            scenario=f"{labels:,} malformed labels", inputs=len(label_messages), predicted=0,
            dead_lettered=label_tally.dead_letters,
            lost=len(label_messages) - counted, duplicated=label_tally.duplicates,
            recovery_seconds=None,
            note="the rest counted by the label join (orphan, duplicate, late)",
        ),
    ]  # fmt: skip


async def _labels_counted(system: System, expected: int, deadline: float) -> int:
    """Label messages the learning worker counted (every outcome), once it has them all."""
    learner = system.learner
    assert learner is not None
    metric = getattr(learner, "metric")  # noqa: B009 - a WorkerProcess, not the Protocol
    counted = 0
    while time.monotonic() < deadline:
        counted = int(await asyncio.to_thread(metric, "streamscore_labels_total") or 0)
        if counted >= expected:
            break
        await asyncio.sleep(0.25)
    return counted
