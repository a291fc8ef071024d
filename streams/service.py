"""The scoring service the agent calls: score a batch off the event loop, publish, measure.

Transient feature-store failures (Redis restarting, a timeout) are retried with backoff;
when they persist the error propagates, the worker stops, and because nothing was acked the
batch is consumed again after restart (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from features.errors import FeatureStoreError
from streams.metrics import Metrics, observe_many
from streams.pipeline import ScoredBatch, ScoringPipeline
from streams.prediction_store import PredictionStore
from streams.publish import Publisher
from streams.records import InputMessage
from streams.shadow import ShadowBatch, ShadowRunner

log = logging.getLogger(__name__)


class ScoringService:
    def __init__(
        self,
        pipeline: ScoringPipeline,
        publisher: Publisher,
        metrics: Metrics,
        *,
        store: PredictionStore | None = None,
        shadows: Sequence[ShadowRunner] = (),
        retry_for_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.publisher = publisher
        self.store = store
        self.shadows = list(shadows)
        self.clock = clock
        self.retry_for_seconds = retry_for_seconds
        name = pipeline.spec.name
        self._m_publish = metrics.stage_seconds.labels(name, "publish")
        self._m_end_to_end = metrics.end_to_end_seconds.labels(name)

    async def handle(self, messages: Sequence[InputMessage]) -> ScoredBatch:
        scored = await self._score(messages)
        started = time.perf_counter()
        if self.store is not None and scored.events:
            # Remembered for the label join before the inputs are acked: at-least-once too.
            await asyncio.gather(self.publisher.publish(scored.records), self._remember(scored))
        else:
            await self.publisher.publish(scored.records)
        self._m_publish.observe(time.perf_counter() - started)
        if scored.events:
            event_times = scored.event_times
            observe_many(self._m_end_to_end, self.clock() - event_times)
            self._offer_to_shadows(scored, event_times)
        return scored

    async def _remember(self, scored: ScoredBatch) -> None:
        assert self.store is not None and scored.matrix is not None and scored.scores is not None
        await self.store.put_predictions(
            [event.event_id for event in scored.events],
            self.clock(),
            scored.model,
            scored.model_version,
            scored.scores.tolist(),
            scored.matrix,
        )

    def _offer_to_shadows(self, scored: ScoredBatch, event_times: npt.NDArray[np.float64]) -> None:
        if not self.shadows or scored.matrix is None or scored.scores is None:
            return
        batch = ShadowBatch(
            event_ids=[event.event_id for event in scored.events],
            entity_keys=[event.entity_key for event in scored.events],
            event_times=event_times,
            matrix=scored.matrix,
            primary_scores=scored.scores,
        )
        for shadow in self.shadows:
            shadow.offer(batch)  # never waits: a shadow that falls behind sheds

    async def _score(self, messages: Sequence[InputMessage]) -> ScoredBatch:
        # On the event loop, not in a thread: the feature read is awaited (the loop keeps
        # fetching and producing meanwhile) and the rest is a few hundred µs of numpy and
        # ONNX. A scoring thread measured far worse: each return from I/O waited for the
        # GIL behind the loop (up to the 5 ms switch interval), several times a batch.
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(FeatureStoreError),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            stop=stop_after_delay(self.retry_for_seconds),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self.pipeline.score_batch(messages)
        msg = "unreachable: tenacity reraises the last error"
        raise AssertionError(msg)

    def close(self) -> None:
        for shadow in self.shadows:
            shadow.close()
