"""A shadow that fell behind takes every queued batch as one: one model run and one publish
for all of them, records in the primary's order, the backlog gauge back to zero; its scores are
stored before its records are published."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson

from streams.metrics import Metrics
from streams.shadows.shadow import ShadowBatch, ShadowRunner
from tests.unit.test_shadow_follow import Publisher


class Counting:
    """A shadow that scores each row by its first column and counts its runs."""

    name, version = "fraud_gbt", 1

    def __init__(self) -> None:
        self.runs: list[int] = []

    def score(self, matrix: Any) -> np.ndarray:
        self.runs.append(len(matrix))
        return matrix[:, 0].astype(np.float64) / 100.0


def batch(first: int, n: int) -> ShadowBatch:
    ids = list(range(first, first + n))
    return ShadowBatch(
        event_ids=[f"e{i}" for i in ids],
        entity_keys=ids,
        event_time_texts=["2026-01-01T00:00:00.000Z"] * n,
        matrix=np.array([[i, 0.0] for i in ids], dtype=np.float32),
        primary_scores=np.full(n, 0.5),
    )


async def run_until_drained(runner: ShadowRunner) -> None:
    """Run ``runner`` until every batch offered so far is scored and published, then stop
    and close it."""
    running = asyncio.ensure_future(runner.run())
    try:
        await asyncio.wait_for(runner.drain(), 10)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        runner.close()


async def test_batches_queued_behind_a_busy_shadow_are_scored_as_one() -> None:
    model, publisher, metrics = Counting(), Publisher(), Metrics()
    runner = ShadowRunner(
        model, pipeline="p", topic="shadows", threshold=0.5, queue_batches=16,
        publisher=publisher, store=None, metrics=metrics,  # type: ignore[arg-type]
    )  # fmt: skip
    for first, n in ((0, 3), (3, 1), (4, 2), (6, 4)):  # queued while the shadow was away
        runner.offer(batch(first, n))
    await run_until_drained(runner)
    assert model.runs == [10]  # one run for the four batches
    records = [orjson.loads(r.value) for r in publisher.records]
    assert [r["event_id"] for r in records] == [f"e{i}" for i in range(10)]
    assert [r["score"] for r in records] == [i / 100.0 for i in range(10)]
    assert runner.scored == 10
    backlog = metrics.registry.get_sample_value(
        "streamscore_shadow_backlog_events", {"pipeline": "p", "model": "fraud_gbt"}
    )
    assert backlog == 0


class StoreThenPublish:
    """A store and a publisher that note, per published record, whether the shadow's score
    for its event was already stored."""

    def __init__(self) -> None:
        self.stored: set[str] = set()
        self.stored_when_published: list[bool] = []

    async def put_shadow_scores(self, model, event_ids, scores, version=None, infer_seconds=None):
        await asyncio.sleep(0)  # a real store awaits a round trip
        self.stored.update(event_ids)

    async def publish(self, records) -> None:
        self.stored_when_published += [r.key.decode() in self.stored for r in records]


async def test_a_shadow_score_is_stored_before_its_record_is_published() -> None:
    both = StoreThenPublish()
    runner = ShadowRunner(
        Counting(), pipeline="p", topic="shadows", threshold=0.5, queue_batches=16,
        publisher=both, store=both, metrics=Metrics(),  # type: ignore[arg-type]
    )  # fmt: skip
    runner.offer(batch(0, 3))
    await run_until_drained(runner)
    assert both.stored_when_published == [True, True, True]
