"""The online model on a real labelled stream, as issue 13's proof measures it.

River's bundled Phishing dataset (tests/specs/phishing) is replayed through Kafka in its
natural order, ``passes`` times in a row, each label sent ``delay`` events after its event;
River's own ``progressive_val_score`` with the same model and delay is the reference; and
the figures come from what the online shadow published (its records) and from the worker's
staleness histograms.

Shared by tests/integration/test_online_served.py (200 events/s, one pass, asserted) and
``python -m load_tests.online_accuracy`` (2,000 events/s, several passes, reported). The
figures are pure functions of the records, unit-tested in tests/unit/test_online_served.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from load_tests.processes import Samples
from streams.runtime.connections import KafkaConnection
from streams.spec import OnlineModelSpec
from tests.specs.phishing.pages import event, rows

PHISHING_SPEC = Path(__file__).resolve().parent.parent / "tests/specs/phishing/spec.yaml"
EVENT_PREFIX = "page-"  # event k of the replayed stream is page-<k>, its label names it


def stream(passes: int = 1) -> list[tuple[dict[str, float], bool]]:
    """The dataset ``passes`` times in a row, in its natural order: row k is event k.

    A pass's event ids follow the previous pass's (``page-1250`` is the second pass's first
    page), so every event and label of the replay is unique."""
    return rows() * passes


def label_message(k: int, data: Sequence[tuple[dict[str, float], bool]]) -> bytes:
    return orjson.dumps({"event_id": f"{EVENT_PREFIX}{k}", "label": int(data[k][1])})


@dataclass(frozen=True)
class Replayed:
    """What the replay sent and how well it kept its schedule."""

    events: int
    labels: int
    seconds: float  # first event sent to last event sent (the last labels follow)
    max_lag_seconds: float  # how late a send ran against its schedule, at worst

    @property
    def events_per_second(self) -> float:
        """The rate achieved: events after the first over the time they took."""
        return (self.events - 1) / self.seconds if self.seconds else 0.0


async def replay(
    bootstrap: str,
    events_topic: str,
    labels_topic: str,
    *,
    rate: float,
    delay: int,
    passes: int = 1,
) -> Replayed:
    """Event k at k / ``rate`` seconds; the label of event k - ``delay`` sent just before it
    (the last labels keep the pace, as if the stream went on). A late send does not shift
    the schedule: the events it delayed go out at once."""
    data = stream(passes)
    total = len(data)
    producer = KafkaConnection(bootstrap).producer(linger_ms=0)
    await producer.start()
    try:
        start = last_event = time.monotonic()
        lag = 0.0
        sent = []
        for k in range(total + delay):
            lag = max(lag, time.monotonic() - (start + k / rate))
            if k >= delay:
                label = label_message(k - delay, data)
                sent.append(await producer.send(labels_topic, label, key=b"l"))
            if k < total:
                value = orjson.dumps(event(k, data[k][0], datetime.now(UTC)))
                key = f"{EVENT_PREFIX}{k}".encode()
                sent.append(await producer.send(events_topic, value, key=key))
                last_event = time.monotonic()
            pause = start + (k + 1) / rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return Replayed(total, total, last_event - start, lag)


@dataclass(frozen=True)
class Reference:
    """River's ``progressive_val_score`` over the replayed stream."""

    whole: float  # accuracy over every pass
    per_pass: list[float]  # accuracy on each pass's events (the model keeps learning)


def river_reference(online: OnlineModelSpec, delay: int, passes: int = 1) -> Reference:
    """River's own progressive validation of the spec's online model on the same ordered
    stream, labels ``delay`` events late (``moment`` None: the row index is the time, so label
    i is revealed just before question i + delay). ``iter_progressive_val_score`` is the
    same evaluation as ``progressive_val_score``, read once per pass as well."""
    from river import evaluate, metrics

    from models.online import build_river_model

    n = len(rows())
    cumulative = [
        float(state["Accuracy"].get())
        for state in evaluate.iter_progressive_val_score(
            stream(passes),
            build_river_model(online),
            metrics.Accuracy(),
            moment=None,
            delay=delay,
            step=n,
        )
    ]
    return Reference(cumulative[-1], per_pass_from_cumulative(cumulative))


def progressive_decisions(
    online: OnlineModelSpec, delay: int, passes: int = 1, threshold: float | None = 0.5
) -> list[bool]:
    """Progressive validation as River's ``progressive_val_score(moment=None, delay=delay)``
    runs it (label i learned just before question i + delay), whether each question was
    answered right. ``threshold`` None decides with River's ``predict_one``; a number
    decides as the service does, ``score >= threshold``. The two differ only on exact ties
    (an untrained model's 0.5: River says False, the service True), so the served figure is
    compared with the reference that decides the same way: the gap is then staleness alone."""
    from models.online import build_river_model

    model = build_river_model(online)
    data = stream(passes)
    right = []
    for j, (x, y) in enumerate(data):
        if j >= delay:
            model.learn_one(*data[j - delay])
        if threshold is None:
            decision = bool(model.predict_one(x))
        else:
            decision = model.predict_proba_one(x).get(True, 0.0) >= threshold
        right.append(decision == y)
    return right


def decisions_at_served_staleness(
    online: OnlineModelSpec, learned: Mapping[int, int], threshold: float = 0.5
) -> dict[int, bool]:
    """Per served event k, whether River's model would have decided it right had it learned
    exactly the first ``learned[k]`` labels (in the order they were sent), as the snapshot
    that served k had (its record's ``learned_labels``). Progressive validation with the
    staleness each event really met instead of a fixed delay: the served accuracy should
    match it on any machine, however loaded, where the fixed-delay figure only matches on
    one quiet enough to keep up. With ``learned[k] = max(0, k - delay + 1)`` it is
    ``progressive_decisions(online, delay)``. Labels learned out of send order (a held
    label learned after later ones) make it approximate, by those few labels."""
    from models.online import build_river_model

    model = build_river_model(online)
    data = stream(1 + max(learned, default=0) // len(rows()))
    taught = 0
    right = {}
    for k in sorted(learned, key=lambda k: learned[k]):  # teach each label once, in order
        while taught < learned[k]:
            model.learn_one(*data[taught])
            taught += 1
        x, y = data[k]
        right[k] = (model.predict_proba_one(x).get(True, 0.0) >= threshold) == y
    return right


def per_pass_from_cumulative(cumulative: Sequence[float]) -> list[float]:
    """Each pass's own accuracy from the running accuracy after each (equal-sized) pass:
    after pass p the running figure covers p passes, so pass p's correct share is
    p * c[p] - (p - 1) * c[p - 1]."""
    out = []
    previous = 0.0
    for p, running in enumerate(cumulative, start=1):
        out.append(p * running - (p - 1) * previous)
        previous = running
    return out


def served_by_event(
    values: Iterable[Mapping[str, Any]], model: str
) -> dict[int, Mapping[str, Any]]:
    """The records ``model`` published for the replay's events, by event index (records of
    other models, and events not of the replay such as a warm-up, are left out)."""
    served: dict[int, Mapping[str, Any]] = {}
    for value in values:
        event_id = str(value.get("event_id", ""))
        if value.get("model") == model and event_id.startswith(EVENT_PREFIX):
            index = event_id.removeprefix(EVENT_PREFIX)
            if index.isdigit():
                served[int(index)] = value
    return served


@dataclass(frozen=True)
class Served:
    """What the online shadow served, computed from its records alone."""

    events: int  # events replayed
    missing: list[int]  # of them, those with no published record (shed, lost)
    correct: dict[int, bool]  # per served event: its decision was the label
    behind: dict[int, int]  # per served event: labels sent before it its snapshot lacked

    @property
    def accuracy(self) -> float:
        return float(np.mean(list(self.correct.values()))) if self.correct else float("nan")

    def accuracy_per_pass(self, pass_size: int) -> list[float]:
        hits: dict[int, list[bool]] = defaultdict(list)
        for k, right in self.correct.items():
            hits[k // pass_size].append(right)
        passes = -(-self.events // pass_size)
        return [float(np.mean(hits[p])) if hits[p] else float("nan") for p in range(passes)]


def served_figures(
    served: Mapping[int, Mapping[str, Any]], truth: Sequence[bool], delay: int
) -> Served:
    """Per replayed event k (``truth[k]`` its label): whether the decision it was served was
    right, and how many labels it was *behind*: the labels sent before it that the serving
    snapshot had not learned (its record's ``learned_labels``). Label j goes out just before
    event j + ``delay``, so labels 0..k - delay precede event k: exactly those River's
    ``progressive_val_score(delay=delay)`` has learned when it predicts row k. Behind 0 is
    River's freshness; below 0, the snapshot had also learned labels sent after the event
    (it was scored that much later); an orphan label (never learned) adds one to every later
    event."""
    correct = {}
    behind = {}
    for k in range(len(truth)):
        record = served.get(k)
        if record is None:
            continue
        correct[k] = record["decision"] == truth[k]
        behind[k] = max(0, k - delay + 1) - int(record["learned_labels"])
    missing = [k for k in range(len(truth)) if k not in served]
    return Served(len(truth), missing, correct, behind)


def scored_after_ms(values: Iterable[Mapping[str, Any]], model: str) -> list[float]:
    """Per record of ``model`` for the replay's events: ``scored_at`` - ``event_time`` in ms
    (the replay stamps the event as it sends it; same machine, same clock). The prediction is
    stored a publish later: a label sent sooner after its event than this finds no prediction
    (an orphan)."""
    return [
        (datetime.fromisoformat(v["scored_at"]) - datetime.fromisoformat(v["event_time"]))
        / timedelta(milliseconds=1)
        for v in served_by_event(values, model).values()
    ]


def spread(values: Iterable[float]) -> dict[str, float]:
    """Min, median, p90 and max (the figures README quotes for staleness)."""
    array = np.asarray(list(values), dtype=float)
    if not array.size:
        return dict.fromkeys(("min", "median", "p90", "max"), float("nan"))
    return {
        "min": float(array.min()),
        "median": float(np.median(array)),
        "p90": float(np.percentile(array, 90)),
        "max": float(array.max()),
    }


def buckets(samples: Samples, histogram: str, **labels: str) -> dict[float, float]:
    """A histogram's cumulative buckets (upper bound -> count) from scraped samples, summed
    over the series whose labels include ``labels``."""
    wanted = set(labels.items())
    out: dict[float, float] = {}
    for (name, label_items), value in samples.items():
        if name == f"{histogram}_bucket" and wanted <= set(label_items):
            bound = float(dict(label_items)["le"])
            out[bound] = out.get(bound, 0.0) + value
    return out


def share_within(cumulative: Mapping[float, float], bound: float) -> float:
    """The share of observations at most ``bound`` (a bucket's upper bound)."""
    total = cumulative.get(float("inf"), 0.0)
    return cumulative[bound] / total if total else float("nan")
