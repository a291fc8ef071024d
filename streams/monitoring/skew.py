"""Online/offline skew: the features a prediction served against the ones Feast's offline
store gives for the same entity at the event's time (what training would have read).

What is compared: the model input columns that are a feature ref as read (every
``model_input`` entry with ``feature:``); event fields, one-hot groups included, do not
come from Feast and are not compared, nor are refs the model input does not use. Both sides
are taken as serving and training take them: an offline value Feast has none of (no row
within the view's ttl) is the spec's default, as ``streamscore train`` fills it, and it is
rounded to float32, as the served vector stored it. A value the online store served past
``features.max_age_seconds`` (so defaulted) that the offline store still has is skew, and
reported as such: the model was trained on the value.

This module is the comparison (numpy over a batch) and its record in Redis (``SkewLog``:
counts since the check began and the latest mismatches, JSON only), which ``streamscore
skew`` reads. Sampling and the offline read are ``streams.learning.skew_check``'s.

>>> layout = SkewColumns(("v:a", "v:b"), ("v__a", "v__b"), np.array([1, 2]), np.array([0, 1]),
...                      np.array([0.0, 5.0]))
>>> served = np.array([[9.0, 1.0, 5.0], [9.0, 2.0, 7.0]], dtype=np.float32)
>>> offline = np.array([[1.0, np.nan], [2.0, 6.0]])
>>> result = compare(layout, served, offline, 1e-6, ["e1", "e2"], ["k1", "k2"], [0.0, 0.0])
>>> result.mismatched.tolist(), result.max_abs_difference.tolist()
([0, 1], [0.0, 1.0])
>>> [(e["event_id"], e["feature"], e["online"], e["offline"]) for e in result.examples]
[('e2', 'v__b', 7.0, 6.0)]
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import redis.asyncio as aioredis

from models.inputs import InputLayout
from streams.scoring.prediction_store import Keys
from streams.spec import PipelineSpec, feature_column

#: Examples one check keeps at most (per label batch), before the Redis list's own cap.
EXAMPLES_PER_CHECK = 20


def sampled(event_id: str, rate: float) -> bool:
    """Whether ``event_id`` is in the sample: a hash of the id below ``rate``, so the same
    events are chosen by any worker, after any restart.

    >>> sampled("e1", 0.0), sampled("e1", 1.0)
    (False, True)
    >>> sum(sampled(f"e{i}", 0.1) for i in range(10_000))
    1046
    """
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


@dataclass(frozen=True)
class SkewColumns:
    """Which model input columns are compared, and with which offline value."""

    refs: tuple[str, ...]  # the compared feature refs, in model input order
    names: tuple[str, ...]  # their column names ('view__feature'): metric labels
    columns: npt.NDArray[np.intp]  # their columns in the model input vector
    ref_index: npt.NDArray[np.intp]  # their columns in the offline read (spec.features.refs)
    defaults: npt.NDArray[np.float64]  # the spec's defaults: an offline value Feast lacks

    @classmethod
    def of(cls, spec: PipelineSpec) -> SkewColumns:
        positions = InputLayout(spec).feature_positions
        all_refs = list(spec.features.refs)
        refs = tuple(sorted(positions, key=positions.__getitem__))
        return cls(
            refs=refs,
            names=tuple(feature_column(ref) for ref in refs),
            columns=np.array([positions[ref] for ref in refs], dtype=np.intp),
            ref_index=np.array([all_refs.index(ref) for ref in refs], dtype=np.intp),
            defaults=np.array([spec.features.defaults[ref] for ref in refs], dtype=np.float64),
        )


@dataclass
class SkewResult:
    """One check: per compared feature, how many rows differ and the largest difference."""

    checked: int
    features: tuple[str, ...]
    mismatched: npt.NDArray[np.int64]
    max_abs_difference: npt.NDArray[np.float64]  # 0 where every row matched
    examples: list[dict[str, Any]] = field(default_factory=list)


def compare(
    layout: SkewColumns,
    served: npt.NDArray[np.float32],
    offline: npt.NDArray[np.float64],
    tolerance: float,
    event_ids: Sequence[str],
    entity_keys: Sequence[str | int | None],
    event_times: Sequence[float],
    max_examples: int = EXAMPLES_PER_CHECK,
) -> SkewResult:
    """``served``: the stored model input vectors (rows); ``offline``: the offline read of
    the same rows (columns follow spec.features.refs; NaN where Feast has no value). A value
    differs when |online - offline| > tolerance x max(1, |online|, |offline|)."""
    online = served[:, layout.columns].astype(np.float64)
    picked = offline[:, layout.ref_index]
    absent = np.isnan(picked)
    expected = np.where(absent, layout.defaults, picked).astype(np.float32).astype(np.float64)
    difference = np.abs(online - expected)
    bound = tolerance * np.maximum(1.0, np.maximum(np.abs(online), np.abs(expected)))
    differs = ~(difference <= bound)  # NaN (a served NaN) differs too
    finite = np.where(np.isfinite(difference), difference, np.inf)
    largest = finite.max(axis=0, initial=0.0)
    examples = []
    for i, j in np.argwhere(differs)[:max_examples].tolist():
        examples.append(
            {
                "event_id": event_ids[i],
                "entity_key": entity_keys[i],
                "event_time": event_times[i],
                "feature": layout.names[j],
                "online": _number(online[i, j]),
                "offline": _number(expected[i, j]),
                "offline_defaulted": bool(absent[i, j]),
                "difference": _number(difference[i, j]),
            }
        )
    return SkewResult(
        checked=len(online),
        features=layout.names,
        mismatched=differs.sum(axis=0).astype(np.int64),
        max_abs_difference=largest.astype(np.float64),
        examples=examples,
    )


def _number(value: float) -> float | None:
    """JSON has no NaN or infinity: None for them."""
    value = float(value)
    return value if math.isfinite(value) else None


# KEYS: the totals hash, the recent list. ARGV: checked, time, examples kept, number of
# features, then (feature, mismatched, max difference) per feature, then the examples.
RECORD = """
local totals, recent = KEYS[1], KEYS[2]
redis.call('HINCRBY', totals, 'checked', ARGV[1])
redis.call('HSETNX', totals, 'first_at', ARGV[2])
redis.call('HSET', totals, 'last_at', ARGV[2])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local name = ARGV[5 + 3 * i]
  redis.call('HINCRBY', totals, 'mismatched:' .. name, ARGV[6 + 3 * i])
  local largest = tonumber(redis.call('HGET', totals, 'max:' .. name) or '0')
  if tonumber(ARGV[7 + 3 * i]) > largest then
    redis.call('HSET', totals, 'max:' .. name, ARGV[7 + 3 * i])
  end
end
for i = 5 + 3 * n, #ARGV do
  redis.call('LPUSH', recent, ARGV[i])
end
redis.call('LTRIM', recent, 0, tonumber(ARGV[3]) - 1)
return 1
"""


class SkewLog:
    """The check's record in Redis, shared by whichever worker learns: counts since the
    check began and the latest mismatches (JSON objects, never anything executable)."""

    def __init__(self, client: aioredis.Redis, pipeline: str, keep: int) -> None:
        keys = Keys(pipeline)
        self._keys = [keys.skew_totals, keys.skew_recent]
        self._keep = keep
        self._record = client.register_script(RECORD)

    async def record(self, result: SkewResult, at: float) -> None:
        """Add one check, in one atomic round trip."""
        args: list[Any] = [result.checked, repr(at), self._keep, len(result.features)]
        for name, count, largest in zip(
            result.features, result.mismatched.tolist(), result.max_abs_difference.tolist(),
            strict=True,
        ):  # fmt: skip
            args += [name, count, repr(largest if math.isfinite(largest) else 1e308)]
        args += [orjson.dumps(example) for example in reversed(result.examples)]
        await self._record(keys=self._keys, args=args)


@dataclass
class FeatureSkew:
    feature: str
    mismatched: int
    max_abs_difference: float


@dataclass
class SkewReport:
    """What ``streamscore skew`` shows: read back from ``SkewLog``'s keys."""

    checked: int = 0
    first_at: float | None = None
    last_at: float | None = None
    features: list[FeatureSkew] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def parse(
        cls, totals: dict[bytes, bytes], recent: Sequence[bytes], compared: Sequence[str]
    ) -> SkewReport:
        """From the raw hash and list; every feature of ``compared`` gets a row (0 when the
        check has not seen it). Entries that are not what ``SkewLog`` writes are skipped."""
        fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in totals.items()}
        names = list(compared) + sorted(
            {k.partition(":")[2] for k in fields if k.startswith("mismatched:")} - set(compared)
        )
        report = cls(
            checked=_int(fields.get("checked")),
            first_at=_float(fields.get("first_at")),
            last_at=_float(fields.get("last_at")),
        )
        for name in names:
            report.features.append(
                FeatureSkew(
                    name,
                    _int(fields.get(f"mismatched:{name}")),
                    _float(fields.get(f"max:{name}")) or 0.0,
                )
            )
        for raw in recent:
            try:
                example = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(example, dict) and isinstance(example.get("feature"), str):
                report.examples.append(example)
        return report


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
