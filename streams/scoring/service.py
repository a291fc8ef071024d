"""The scoring service the agent calls: score a batch, count it for drift and data quality,
publish it (and remember it for the label join), hand it to the shadows, measure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from streams.metrics import Metrics, observe_many
from streams.monitoring.drift import DriftMonitor
from streams.monitoring.quality import QualityMonitor
from streams.monitoring.slices import Codes, SliceLayout
from streams.scoring.pipeline import ScoredBatch, ScoringPipeline
from streams.scoring.prediction_store import PredictionStore
from streams.scoring.publish import Publisher
from streams.scoring.records import InputMessage, OutputRecord
from streams.shadows.shadow import ShadowBatch, ShadowRunner


class ScoringService:
    def __init__(
        self,
        pipeline: ScoringPipeline,
        publisher: Publisher,
        metrics: Metrics,
        *,
        store: PredictionStore | None = None,
        shadows: Sequence[ShadowRunner] = (),
        drift: DriftMonitor | None = None,
        clock: Callable[[], float] = time.time,
        quality: QualityMonitor | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.quality = quality
        self.drift = drift
        self.publisher = publisher
        self.store = store
        self.shadows = list(shadows)
        self.clock = clock
        name = pipeline.spec.name
        self._m_publish = metrics.stage_seconds.labels(name, "publish")
        self._m_drift = metrics.stage_seconds.labels(name, "drift")
        self._m_end_to_end = metrics.end_to_end_seconds.labels(name)
        self._m_quality = metrics.stage_seconds.labels(name, "quality")
        # monitoring.slices: each event's slice values, for drift and the label join.
        self.slices = SliceLayout.of(pipeline.spec)

    async def handle(self, messages: Sequence[InputMessage]) -> ScoredBatch:
        scored = await self.pipeline.score_batch(messages)
        records = scored.records
        codes = self._slice_codes(scored)
        # A closed drift window's record is published with the batch: no extra round trip.
        if closed := self._count_drift(scored, codes):
            records += closed
        if closed := self._count_quality(scored):
            records += closed
        started = time.perf_counter()
        if self.store is not None and scored.events:
            # Remembered for the label join before the inputs are acked: at-least-once too.
            await asyncio.gather(self.publisher.publish(records), self._remember(scored, codes))
        else:
            await self.publisher.publish(records)
        self._m_publish.observe(time.perf_counter() - started)
        if scored.events:
            observe_many(self._m_end_to_end, self.clock() - scored.event_times)
            self._offer_to_shadows(scored)
        return scored

    def _slice_codes(self, scored: ScoredBatch) -> Codes | None:
        if self.slices is None or not scored.events:
            return None
        return self.slices.codes([event.fields for event in scored.events], scored.matrix)

    def _count_drift(self, scored: ScoredBatch, codes: Codes | None) -> list[OutputRecord]:
        if self.drift is None or scored.matrix is None or scored.scores is None:
            return []
        started = time.perf_counter()
        closed = self.drift.observe(
            scored.model, scored.model_version, scored.matrix, scored.scores, codes
        )
        self._m_drift.observe(time.perf_counter() - started)
        return closed

    def _count_quality(self, scored: ScoredBatch) -> list[OutputRecord]:
        if self.quality is None:
            return []
        started = time.perf_counter()
        closed = self.quality.observe(
            scored.matrix,
            scored.feature_defaulted,
            scored.events,
            len(scored.dead_letters),
            scored.unknown_categories,
        )
        self._m_quality.observe(time.perf_counter() - started)
        return closed

    async def _remember(self, scored: ScoredBatch, codes: Codes | None) -> None:
        assert self.store is not None and scored.matrix is not None
        assert scored.served_scores is not None
        canary = scored.canary_rows
        kept: dict[str, Any] = {}  # what the spec's monitoring asks the store to keep too
        if canary is not None:  # which rows the canary served (model.canary)
            kept["canary"] = (canary.tolist(), scored.canary_version)
        if self.pipeline.spec.monitoring.skew.enabled:  # what the learner asks Feast offline
            entity_keys = [event.entity_key for event in scored.events]
            kept["skew_keys"] = (entity_keys, scored.event_times.tolist())
        if codes is not None and self.slices is not None:  # monitoring.slices, for the learner
            kept["slices"] = self.slices.stored(codes)
        await self.store.put_predictions(
            scored.event_ids,
            self.clock(),
            scored.model,
            scored.model_version,
            scored.served_scores.tolist(),
            scored.matrix,
            infer_seconds=scored.model_seconds,
            **kept,
        )

    def _offer_to_shadows(self, scored: ScoredBatch) -> None:
        if not self.shadows or scored.matrix is None or scored.scores is None:
            return
        batch = ShadowBatch(
            event_ids=scored.event_ids,
            entity_keys=scored.entity_keys,  # as records carry them (privacy)
            event_time_texts=scored.event_time_texts,
            matrix=scored.matrix,
            primary_scores=scored.scores,
        )
        for shadow in self.shadows:
            shadow.offer(batch)  # never waits: a shadow that falls behind sheds

    def close(self) -> None:
        for shadow in self.shadows:
            shadow.close()
