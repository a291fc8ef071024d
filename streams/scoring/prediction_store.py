"""What was predicted, kept until its label arrives: the exact input vector and every
model's score, in Redis (shared by all workers), with a TTL.

Labels are joined to these records, never to features read again later, so a label trains
and evaluates on exactly what the models saw (no leakage). Records live for the label
window plus a grace period, so a label arriving a little after its window is recognised as
*late* rather than as an *orphan* (a label for an event never predicted).

With ``monitoring.skew`` on, each record also keeps its event's entity key and time: what
the skew check (``streams.learning.skew_check``) asks Feast's offline store for.

One Redis round trip per batch: a small Lua script sets every key of the batch with its TTL
(client-side cost is building one argument list, not one command object per event).

A record is a 4-byte header length, a JSON header (``t`` predicted at, ``m`` model, ``v``
version, ``s`` score; with ``monitoring.skew`` ``k`` and ``e``, the entity key and event
time; with ``monitoring.slices`` ``x``, the event's slice values in the spec's order, each
a category, a bool or null) and the float32 vector. ``x`` is optional
both ways: records stored before it (or without slices) decode with ``slices`` None, and a
reader that does not know it ignores it. Never a pickle.

>>> data = encode_record(1.5, "m", 2, 0.25, np.ones(2, np.float32), slices=["web", True])
>>> record = decode_record("e1", data)
>>> record.slices, record.vector.tolist()
(('web', True), [1.0, 1.0])
>>> decode_record("e1", encode_record(1.5, "m", 2, 0.25, np.ones(2, np.float32))).slices
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import redis.asyncio as aioredis

from streams.scoring.canary import arm, arm_model_name

# ARGV: ttl, counter key ('' for none), counter increment, inference hash ('' for none),
# its model@version, the batch's inference seconds, its events, then key/value pairs.
SET_MANY_WITH_TTL = """
local ttl = tonumber(ARGV[1])
if ARGV[2] ~= '' then
  redis.call('INCRBY', ARGV[2], ARGV[3])
  redis.call('EXPIRE', ARGV[2], ttl * 2)
end
if ARGV[4] ~= '' then
  redis.call('HINCRBYFLOAT', ARGV[4], ARGV[5] .. ' seconds', ARGV[6])
  redis.call('HINCRBY', ARGV[4], ARGV[5] .. ' events', ARGV[7])
end
for i = 8, #ARGV, 2 do
  redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', ttl)
end
return (#ARGV - 7) / 2
"""
# KEYS: the taken-labels counter (labels the labels consumer joined and hands to the learner);
# ARGV: the increment, the checkpoints channel. The online shadows hear the new total
# ("forwarded <n>") and so how far behind they serve.
COUNT_FORWARDED = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'forwarded ' .. total)
return total
"""
#: How much longer than the label window a record is kept, to tell late from orphan labels.
GRACE_FACTOR = 2.0
_HEADER = struct.Struct("<I")


class Keys:
    """Every Redis key of a pipeline: predictions, shadow scores, the online model, counts,
    the dead-letter replay log."""

    def __init__(self, pipeline: str) -> None:
        self.prefix = f"streamscore:{pipeline}"
        self.snapshot = f"{self.prefix}:online:snapshot"
        self.version = f"{self.prefix}:online:version"
        self.evaluation = f"{self.prefix}:online:evaluation"  # every model, served scores
        self.as_learned_evaluation = f"{self.prefix}:online:evaluation:as_learned"
        #: The learner's concept-drift detectors and realized accuracy per window (JSON).
        self.performance = f"{self.prefix}:online:performance"
        #: Every model's rolling evaluation per monitoring.slices value (served scores).
        self.slice_evaluation = f"{self.prefix}:online:evaluation:slices"
        #: Pub/sub channel: the learner publishes each checkpoint's version on it.
        self.checkpoints = f"{self.prefix}:online:checkpoints"
        #: Joined labels handed to the learner, and those it has checkpointed (counters).
        self.labels_forwarded = f"{self.prefix}:online:labels_forwarded"
        self.labels_consumed = f"{self.prefix}:online:labels_consumed"
        #: The token of the learner that may checkpoint (the last to claim the model).
        self.learner_owner = f"{self.prefix}:online:owner"

    def prediction(self, event_id: str) -> str:
        return f"{self.prefix}:prediction:{event_id}"

    def shadow(self, model: str, event_id: str) -> str:
        return f"{self.prefix}:shadow:{model}:{event_id}"

    @property
    def replayed(self) -> str:
        """The ids ``streamscore dlq replay`` has resent (a set)."""
        return f"{self.prefix}:dlq:replayed"

    def learned(self, event_id: str) -> str:
        return f"{self.prefix}:learned:{event_id}"

    @property
    def evidence(self) -> str:
        """The labelled events kept for promotion decisions (a list, newest first)."""
        return f"{self.prefix}:actions:evidence"

    @property
    def inference(self) -> str:
        """Inference seconds and events per model version, as served (a hash)."""
        return f"{self.prefix}:actions:inference"

    @property
    def controller_state(self) -> str:
        """``streamscore controller``'s memory across restarts (a hash: the labels counted
        and the time at the last retrain's start)."""
        return f"{self.prefix}:controller:state"

    @property
    def controller_lease(self) -> str:
        """The token of the controller that may act (the others wait), with a TTL."""
        return f"{self.prefix}:controller:lease"

    def predicted_bucket(self, bucket: int) -> str:
        return f"{self.prefix}:count:predicted:{bucket}"

    def joined_bucket(self, bucket: int) -> str:
        return f"{self.prefix}:count:joined:{bucket}"

    @property
    def skew_totals(self) -> str:
        """The skew check's counts since it began (a hash; streams.monitoring.skew)."""
        return f"{self.prefix}:skew:totals"

    @property
    def skew_recent(self) -> str:
        """The skew check's latest mismatches (a list of JSON objects, newest first)."""
        return f"{self.prefix}:skew:recent"


def bucket_seconds(window_seconds: float) -> float:
    """Coverage is counted in buckets of 1/60 of the label window (at least 1 s)."""
    return max(1.0, window_seconds / 60.0)


@dataclass(frozen=True)
class StoredPrediction:
    event_id: str
    predicted_at: float
    primary: str
    primary_version: int
    vector: npt.NDArray[np.float32]
    scores: dict[str, float]  # model name -> score, for the primary and each shadow that ran
    # model name -> the version that served the score (shadow scores stored before versions
    # were: none)
    versions: dict[str, int] = field(default_factory=dict)
    # Kept only with monitoring.skew on: what the offline store is asked for (skew check).
    entity_key: str | int | None = None
    event_time: float | None = None  # epoch seconds
    #: The event's monitoring.slices values as stored (None: stored without them).
    slices: tuple[str | bool | None, ...] | None = None


def encode_record(
    predicted_at: float,
    model: str,
    version: int,
    score: float,
    vector: npt.NDArray[np.float32],
    entity_key: str | int | None = None,
    event_time: float | None = None,
    slices: Sequence[str | bool | None] | None = None,
) -> bytes:
    fields: dict[str, Any] = {"t": predicted_at, "m": model, "v": version, "s": score}
    if event_time is not None:  # the skew check's: the event's entity key and time
        fields["k"], fields["e"] = entity_key, event_time
    if slices is not None:  # monitoring.slices: the event's values, in the spec's order
        fields["x"] = slices
    header = orjson.dumps(fields)
    return _HEADER.pack(len(header)) + header + vector.astype(np.float32).tobytes()


def decode_record(event_id: str, data: bytes) -> StoredPrediction:
    (size,) = _HEADER.unpack_from(data)
    header = orjson.loads(data[_HEADER.size : _HEADER.size + size])
    vector = np.frombuffer(data[_HEADER.size + size :], dtype=np.float32)
    return StoredPrediction(
        event_id=event_id,
        predicted_at=header["t"],
        primary=header["m"],
        primary_version=header["v"],
        vector=vector,
        scores={header["m"]: header["s"]},
        versions={header["m"]: header["v"]},
        entity_key=header.get("k"),
        event_time=header.get("e"),
        slices=_slice_values(header.get("x")),
    )


def _slice_values(stored: object) -> tuple[str | bool | None, ...] | None:
    """The header's slice values, if they are a list of categories, bools and nulls (what
    the learner labels a metric with is then checked against the spec's values)."""
    if not isinstance(stored, list):
        return None
    if not all(value is None or isinstance(value, str | bool) for value in stored):
        return None
    return tuple(stored)


class PredictionStore:
    def __init__(self, client: aioredis.Redis, pipeline: str, window_seconds: float) -> None:
        self._client = client
        self.keys = Keys(pipeline)
        self.ttl_seconds = max(1, int(window_seconds * GRACE_FACTOR))
        self._set_many = client.register_script(SET_MANY_WITH_TTL)
        self._count_forwarded = client.register_script(COUNT_FORWARDED)
        # Predictions per time bucket: the learner divides joined labels by these.
        self._bucket_seconds = bucket_seconds(window_seconds)

    async def put_predictions(
        self,
        event_ids: Sequence[str],
        predicted_at: float,
        model: str,
        version: int,
        scores: Sequence[float],
        matrix: npt.NDArray[np.float32],
        infer_seconds: float | None = None,
        skew_keys: tuple[Sequence[str | int], Sequence[float]] | None = None,
        canary: tuple[Sequence[bool], int] | None = None,
        slices: Sequence[Sequence[str | bool | None]] | None = None,
    ) -> None:
        """Store what each event was served; with ``infer_seconds`` (the model's time on the
        batch) also add it to the version's inference totals (promotion's latency guard).
        ``skew_keys``: each event's entity key and event time, kept with its vector for the
        skew check (only when the spec's monitoring.skew is on). ``slices``: each event's
        monitoring.slices values (``SliceLayout.stored``). ``canary``: which rows the canary
        served and its version; those are stored under the canary arm's name
        (``streams.scoring.canary.arm_model_name``), so the label join evaluates each arm on
        the events it served."""
        bucket = int(predicted_at // self._bucket_seconds)
        args: list[Any] = [self.ttl_seconds, self.keys.predicted_bucket(bucket), len(event_ids)]
        args += self._inference_args(model, version, infer_seconds, len(event_ids))
        n = len(event_ids)
        entity_keys, event_times = skew_keys if skew_keys is not None else ([None] * n, [None] * n)
        sliced = slices if slices is not None else [None] * n
        on_canary = canary[0] if canary is not None else [False] * n
        arm = (arm_model_name(model), canary[1]) if canary is not None else (model, version)
        rows = zip(event_ids, scores, matrix, entity_keys, event_times, sliced, strict=True)
        for i, (event_id, score, row, entity_key, event_time, values) in enumerate(rows):
            served_by, served_version = arm if on_canary[i] else (model, version)
            args.append(self.keys.prediction(event_id))
            args.append(
                encode_record(
                    predicted_at,
                    served_by,
                    served_version,
                    score,
                    row,
                    entity_key,
                    event_time,
                    slices=values,
                )  # fmt: skip
            )
        await self._set_many(args=args)

    async def put_shadow_scores(
        self,
        model: str,
        event_ids: Sequence[str],
        scores: Sequence[float],
        version: int | None = None,
        infer_seconds: float | None = None,
    ) -> None:
        """Store a shadow's scores, each with the ``version`` that served it ("<score>
        <version>"), and its inference time as ``put_predictions`` does."""
        args: list[Any] = [self.ttl_seconds, "", 0]
        args += self._inference_args(model, version, infer_seconds, len(event_ids))
        suffix = "" if version is None else f" {version}"
        for event_id, score in zip(event_ids, scores, strict=True):
            args.append(self.keys.shadow(model, event_id))
            args.append(f"{float(score)!r}{suffix}")
        await self._set_many(args=args)

    def _inference_args(
        self, model: str, version: int | None, seconds: float | None, events: int
    ) -> list[Any]:
        if seconds is None or version is None or not events:
            return ["", "", 0, 0]
        # The version's arm: a role's name such as the challenger shadow's
        # 'fraud_gbt@challenger' counts under its registry name, where the evidence and the
        # latency guard look for it.
        return [self.keys.inference, arm(model, version), repr(float(seconds)), events]

    async def count_forwarded(self, n: int) -> int:
        """Count ``n`` more labels handed to the learner (and announce the total)."""
        keys = [self.keys.labels_forwarded]
        total = await self._count_forwarded(keys=keys, args=[n, self.keys.checkpoints])
        return int(total)

    async def get(
        self, event_ids: Sequence[str], shadow_models: Sequence[str]
    ) -> list[StoredPrediction | None]:
        """The stored predictions of ``event_ids`` (None where unknown or expired), with the
        scores of every shadow in ``shadow_models`` that scored them; one round trip."""
        if not event_ids:
            return []
        keys = [self.keys.prediction(e) for e in event_ids]
        keys += [self.keys.shadow(m, e) for m in shadow_models for e in event_ids]
        values = await self._client.mget(keys)
        n = len(event_ids)
        found: list[StoredPrediction | None] = []
        for i, event_id in enumerate(event_ids):
            data = values[i]
            if data is None:
                found.append(None)
                continue
            record = decode_record(event_id, data)
            for j, model in enumerate(shadow_models):
                shadow = values[n * (j + 1) + i]
                if shadow is not None:
                    score, *version = shadow.split()
                    record.scores[model] = float(score)
                    if version:
                        record.versions[model] = int(version[0])
            found.append(record)
        return found
