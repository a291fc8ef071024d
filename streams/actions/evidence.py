"""The evidence a promotion is decided on: recent labelled events, each with the score every
registry model version *served* for it.

The learner (``streams.learning.learner``) already joins each label to the stored
prediction, which holds the primary's score and every shadow's, each with the version that
served it. After each checkpoint it appends one entry per newly learned label to a Redis
list, newest first, trimmed to ``actions.promote.evidence_labels``:

    {"e": "<event id>", "y": <label>, "t": <label time, epoch s>,
     "s": {"fraud_gbt@1": 0.0132, "fraud_lr@1": 0.021}}

An *arm* is ``<model>@<version>``. The online model is left out (its version changes with
every checkpoint and the registry cannot promote it), and so is a score whose version is
unknown (stored by a worker older than this). Entries are JSON, read back only as numbers and
strings: nothing in them is ever executed.

Why a bounded Redis list and not a topic: a decision wants the *recent* paired labels of two
versions, read in one round trip, and the learner already writes Redis once per batch; the
list costs one ``LPUSH``/``LTRIM`` per label batch (~100 bytes per label) and needs no scan of
a topic's history. Written after the checkpoint, so a replayed label batch (whose labels the
checkpoint already holds) adds nothing twice; a crash between the two loses one batch's
entries, which a sample can afford.

``paired`` takes what the comparison needs from it, and ``served_shares`` what the
"unserved" guard does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio as aioredis

from streams.actions.compare import PairedSample
from streams.scoring.canary import arm
from streams.scoring.prediction_store import Keys


@dataclass(frozen=True)
class LabelledEvent:
    event_id: str
    label: float
    label_time: float
    scores: dict[str, float]  # arm -> served score


def entries(records: Sequence[dict[str, Any]], skip: str | None) -> list[bytes]:
    """The evidence entries of joined records (``streams.learning.join.joined_record``), in
    their order; ``skip`` is a model left out (the online one). A record none of whose
    scores has a known version gives none."""
    out = []
    for record in records:
        versions = record.get("versions") or {}
        scores = {
            arm(model, versions[model]): score
            for model, score in record["scores"].items()
            if model != skip and model in versions
        }
        if scores:
            entry = {"e": record["event_id"], "y": record["label"], "t": record["label_time"]}
            entry["s"] = scores
            out.append(orjson.dumps(entry))
    return out


class EvidenceLog:
    """The learner's side: appends entries, keeps the newest ``keep``."""

    def __init__(self, client: aioredis.Redis, pipeline: str, keep: int) -> None:
        self._client = client
        self.key = Keys(pipeline).evidence
        self.keep = keep

    async def add(self, new: Sequence[bytes]) -> None:
        if not new:
            return
        # Newest first: LPUSH puts the last argument at the head.
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key, *new)
            pipe.ltrim(self.key, 0, self.keep - 1)
            await pipe.execute()


def read_evidence(client: redis.Redis, pipeline: str) -> list[LabelledEvent]:
    """Every entry kept for ``pipeline``, oldest first; entries that are not evidence (not
    JSON, wrong types) are skipped."""
    raw: list[bytes] = client.lrange(Keys(pipeline).evidence, 0, -1)  # type: ignore[assignment]
    return parse_evidence(raw)


def parse_evidence(raw: Sequence[bytes]) -> list[LabelledEvent]:
    """The evidence list as read from Redis (newest first) -> its events, oldest first."""
    out = []
    for data in reversed(raw):
        event = _parsed(data)
        if event is not None:
            out.append(event)
    return out


def _parsed(data: bytes) -> LabelledEvent | None:
    try:
        entry = orjson.loads(data)
        scores = {str(k): float(v) for k, v in entry["s"].items()}
        return LabelledEvent(str(entry["e"]), float(entry["y"]), float(entry["t"]), scores)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def paired(events: Sequence[LabelledEvent], champion: str, candidate: str) -> PairedSample:
    """The labels and both arms' scores of the events both served."""
    both = [e for e in events if champion in e.scores and candidate in e.scores]
    return PairedSample(
        labels=np.array([e.label for e in both], dtype=np.float64),
        champion=np.array([e.scores[champion] for e in both], dtype=np.float64),
        candidate=np.array([e.scores[candidate] for e in both], dtype=np.float64),
    )


@dataclass(frozen=True)
class ServedShares:
    """Over the labelled events since the candidate first served one (its span), the share
    each arm served a score for. A missing score is a shadow that failed or shed the batch
    (a primary scores every event it predicts)."""

    events: int
    champion: float
    candidate: float


def served_shares(events: Sequence[LabelledEvent], champion: str, candidate: str) -> ServedShares:
    first = next((i for i, e in enumerate(events) if candidate in e.scores), None)
    if first is None:
        return ServedShares(0, float("nan"), float("nan"))
    span = events[first:]
    n = len(span)
    return ServedShares(
        n,
        sum(champion in e.scores for e in span) / n,
        sum(candidate in e.scores for e in span) / n,
    )


@dataclass(frozen=True)
class InferenceTime:
    """What the service measured for one arm: model time over the events it scored."""

    seconds: float
    events: int

    @property
    def per_event(self) -> float:
        return self.seconds / self.events if self.events else float("nan")


def read_inference(client: redis.Redis, pipeline: str) -> dict[str, InferenceTime]:
    """Arm -> its inference totals (``streams.scoring.prediction_store``: the primary's per
    batch, each shadow's per run)."""
    raw: dict[bytes, bytes] = client.hgetall(Keys(pipeline).inference)  # type: ignore[assignment]
    return parse_inference(raw)


def parse_inference(raw: dict[bytes, bytes]) -> dict[str, InferenceTime]:
    """The inference hash as read from Redis -> arm -> its totals."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for field, value in raw.items():
        name, _, kind = field.decode().rpartition(" ")
        try:
            if kind == "seconds":
                seconds[name] = float(value)
            elif kind == "events":
                counts[name] = int(value)
        except ValueError:
            continue
    return {name: InferenceTime(seconds[name], counts[name]) for name in seconds if name in counts}
