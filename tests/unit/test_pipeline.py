"""The scoring pipeline as plain Python: one feature read and one model run per batch,
every input accounted for, bad input isolated. No broker, no Redis: an in-memory feature
source stands in for the online store here (integration tests use the real one)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from models.scorer import OnnxScorer
from streams.metrics import Metrics
from streams.scoring.pipeline import ScoringPipeline
from streams.scoring.records import InputMessage
from streams.spec import load_spec_text

SPEC = load_spec_text(
    """
name: unit
input: {topic: events}
event:
  id_field: id
  fields:
    id: {type: string}
    user: {type: string}
    amount: {type: float, min: 0, max: 1000}
    kind: {type: category, values: [a, b]}
entity: {field: user, join_key: user_id}
features:
  repo: repo
  refs: ["stats:spend", "stats:visits"]
  defaults: {"stats:spend": -1.0, "stats:visits": 0.0}
model_input:
  - {event: amount}
  - {event: kind, encode: one_hot}
  - {feature: "stats:spend"}
model: {name: unit_lr, threshold: 0.5}
output: {topic: scores, dead_letter_topic: dlq}
""",
    base_dir=Path("/tmp"),
)
STORE = {"u1": (10.0, 3.0), "u2": (500.0, 40.0)}
ROW_TIME = 1_699_999_000.0  # every stored row's event timestamp


@dataclass
class Rows:
    values: np.ndarray
    defaulted: np.ndarray
    entity_found: np.ndarray
    timestamps: np.ndarray  # (n, views): epoch seconds, NaN where the row is missing


class InMemoryFeatures:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def read_async(self, keys):
        self.calls.append(list(keys))
        found = np.array([k in STORE for k in keys])
        defaults = [SPEC.features.defaults[r] for r in SPEC.features.refs]
        values = np.array([STORE.get(k, defaults) for k in keys], dtype=np.float64)
        stamps = np.where(found, ROW_TIME, np.nan)[:, None]
        return Rows(values, np.repeat(~found[:, None], 2, axis=1), found, stamps)


class CountingScorer:
    def __init__(self, scorer: OnnxScorer) -> None:
        self.inner, self.name, self.version, self.runs = scorer, scorer.name, scorer.version, 0

    def score(self, matrix):
        self.runs += 1
        return self.inner.score(matrix)


@pytest.fixture(scope="module")
def onnx_scorer() -> OnnxScorer:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] + x[:, 3] > 0).astype(int))
    onnx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}})
    return OnnxScorer(
        onnx.SerializeToString(), name="unit_lr", version=1,
        input_columns=SPEC.input_columns(), task="classification",
    )  # fmt: skip


def message(offset: int, value: bytes | dict) -> InputMessage:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return InputMessage(f"k{offset}".encode(), raw, "events", 0, offset, 1_700_000_000.0)


async def test_one_read_and_one_run_per_batch_and_every_input_accounted(onnx_scorer) -> None:
    features, scorer, metrics = InMemoryFeatures(), CountingScorer(onnx_scorer), Metrics()
    pipeline = ScoringPipeline(SPEC, features, scorer, metrics, clock=lambda: 1_700_000_001.0)
    batch = [
        message(0, {"id": "e0", "user": "u1", "amount": 5, "kind": "a"}),
        message(1, b"garbage"),
        message(2, {"id": "e2", "user": "u2", "amount": 900, "kind": "b"}),
        message(3, {"id": "e3", "user": "nobody", "amount": 1, "kind": "a"}),
        message(4, {"id": "e4", "user": "u1", "amount": 5000, "kind": "a"}),
    ]
    scored = await pipeline.score_batch(batch)

    assert features.calls == [["u1", "u2", "nobody"]] and scorer.runs == 1
    assert [r.key for r in scored.predictions] == [b"e0", b"e2", b"e3"]
    assert [r.key for r in scored.dead_letters] == [b"k1", b"k4"]
    predictions = [orjson.loads(r.value) for r in scored.predictions]
    assert predictions[2]["entity_found"] is False
    assert predictions[2]["features"] == {"stats__spend": -1.0, "stats__visits": 0.0}
    assert predictions[0]["features"] == {"stats__spend": 10.0, "stats__visits": 3.0}
    np.testing.assert_allclose([p["score"] for p in predictions], onnx_scorer.score(scored.matrix))
    assert all(p["decision"] == (p["score"] >= 0.5) for p in predictions)

    sample = metrics.registry.get_sample_value
    assert sample("streamscore_events_total", {"pipeline": "unit"}) == 5
    assert sample("streamscore_predictions_total", {"pipeline": "unit", "model": "unit_lr"}) == 3
    assert sample("streamscore_feature_store_misses_total", {"pipeline": "unit"}) == 1
    dead = {"pipeline": "unit", "stage": "decode"}
    assert sample("streamscore_dead_letters_total", {**dead, "reason": "not_json"}) == 1
    assert sample("streamscore_dead_letters_total", {**dead, "reason": "out_of_range"}) == 1


async def test_a_batch_of_only_bad_input_reads_and_scores_nothing(onnx_scorer) -> None:
    features, scorer = InMemoryFeatures(), CountingScorer(onnx_scorer)
    pipeline = ScoringPipeline(SPEC, features, scorer, Metrics())
    scored = await pipeline.score_batch([message(0, b"{"), message(1, b"[]")])
    assert len(scored.dead_letters) == 2 and not scored.predictions
    assert features.calls == [] and scorer.runs == 0


async def test_scoring_does_not_depend_on_batch_composition(onnx_scorer) -> None:
    events = [
        message(
            i, {"id": f"e{i}", "user": ["u1", "u2", "x"][i % 3], "amount": i, "kind": "ab"[i % 2]}
        )
        for i in range(30)
    ]
    pipeline = ScoringPipeline(SPEC, InMemoryFeatures(), onnx_scorer, Metrics())
    whole = (await pipeline.score_batch(events)).scores
    pieces = np.concatenate(
        [(await pipeline.score_batch(events[i : i + 7])).scores for i in range(0, 30, 7)]
    )
    np.testing.assert_allclose(whole, pieces, rtol=1e-6)


async def test_a_transient_feature_store_failure_is_retried_without_double_counting(
    onnx_scorer,
) -> None:
    from features.errors import FeatureStoreError

    class FlakyFeatures(InMemoryFeatures):
        async def read_async(self, keys):
            if not self.calls:
                self.calls.append(["failed"])
                raise FeatureStoreError("features.reader: redis is restarting")
            return await super().read_async(keys)

    features, metrics = FlakyFeatures(), Metrics()
    pipeline = ScoringPipeline(SPEC, features, onnx_scorer, metrics)
    batch = [
        message(0, {"id": "e0", "user": "u1", "amount": 5, "kind": "a"}),
        message(1, b"garbage"),
    ]
    scored = await pipeline.score_batch(batch)
    assert len(scored.predictions) == 1 and len(scored.dead_letters) == 1
    assert features.calls == [["failed"], ["u1"]]  # only the read was retried
    sample = metrics.registry.get_sample_value
    assert sample("streamscore_events_total", {"pipeline": "unit"}) == 2
    labels = {"pipeline": "unit", "stage": "decode", "reason": "not_json"}
    assert sample("streamscore_dead_letters_total", labels) == 1


async def test_a_persistent_feature_store_failure_propagates(onnx_scorer) -> None:
    from features.errors import FeatureStoreError

    class DownFeatures(InMemoryFeatures):
        async def read_async(self, keys):
            raise FeatureStoreError("features.reader: redis is down")

    pipeline = ScoringPipeline(SPEC, DownFeatures(), onnx_scorer, Metrics(), retry_for_seconds=0.2)
    with pytest.raises(FeatureStoreError):
        await pipeline.score_batch(
            [message(0, {"id": "e0", "user": "u1", "amount": 5, "kind": "a"})]
        )


async def test_feature_read_retries_are_counted_by_stage(onnx_scorer) -> None:
    from features.errors import FeatureStoreError

    class FlakyFeatures(InMemoryFeatures):
        failures = 2

        async def read_async(self, keys):
            if self.failures:
                self.failures -= 1
                raise FeatureStoreError("features.reader: redis is restarting")
            return await super().read_async(keys)

    metrics = Metrics()
    pipeline = ScoringPipeline(SPEC, FlakyFeatures(), onnx_scorer, metrics, retry_for_seconds=5)
    out = await pipeline.score_batch(
        [message(0, {"id": "e0", "user": "u1", "amount": 5, "kind": "a"})]
    )
    assert len(out.predictions) == 1
    retried = metrics.registry.get_sample_value(
        "streamscore_redis_retries_total", {"pipeline": SPEC.name, "stage": "enrich"}
    )
    assert retried == 2


class WaitingScorer(CountingScorer):
    """Scores as the ONNX model does, after waiting ``wait`` seconds without using the CPU
    (what a wait for the GIL or a descheduled thread looks like to a wall clock)."""

    def __init__(self, scorer: OnnxScorer, wait: float) -> None:
        super().__init__(scorer)
        self.wait = wait

    def score(self, matrix):
        time.sleep(self.wait)
        return super().score(matrix)


async def test_the_models_time_is_the_cpu_its_run_took_not_the_time_it_waited(
    onnx_scorer,
) -> None:
    """Promotion's latency guard compares versions on ``model_seconds``: a wait that is not
    the model's work (here 200 ms asleep) must not count."""
    pipeline = ScoringPipeline(SPEC, InMemoryFeatures(), WaitingScorer(onnx_scorer, 0.2), Metrics())
    batch = [message(i, {"id": f"e{i}", "user": "u1", "amount": 5, "kind": "a"}) for i in range(8)]
    scored = await pipeline.score_batch(batch)
    assert scored.model_seconds is not None and 0 < scored.model_seconds < 0.05
