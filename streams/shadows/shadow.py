"""Shadow scoring: other models score the primary's exact feature vectors, off to the side.

Each shadow has a bounded queue of batches, its own task and its own thread. The primary
only ever calls ``offer``, which never waits: when a shadow's queue is full the batch is
shed for that shadow (counted) and the primary carries on. A shadow that fell behind takes
every batch queued so far (up to ``MERGED_EVENTS`` events) as one: one model run, one
publish and one store write for all of them, so it catches up instead of paying each
batch's round trips (small batches at a low rate cost a shadow more than its scoring). A
shadow that raises is counted and keeps running; nothing it does can delay, fail or
reorder primary predictions.

Shadow outputs are for evaluation and best-effort: a batch queued for a shadow when the
worker stops is not scored. They go to the spec's shadow topic and to the prediction store
(so delayed labels evaluate shadows too).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.inputs import Matrix
from models.manifest import Task
from streams.metrics import Metrics, observe_many
from streams.scoring.prediction_store import PredictionStore
from streams.scoring.publish import Publisher
from streams.scoring.records import OutputRecord, encode_shadow_prediction, iso_utc

log = logging.getLogger(__name__)

#: Events in the sliding window of the agreement gauge.
AGREEMENT_WINDOW = 10_000
#: Most events a shadow merges from its queue into one run.
MERGED_EVENTS = 4096


class ShadowModel(Protocol):
    name: str

    @property
    def version(self) -> int: ...

    def score(self, matrix: Matrix) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class ShadowBatch:
    """What the primary scored, handed to every shadow."""

    event_ids: Sequence[str]  # hashed if the spec's privacy hashes them
    entity_keys: Sequence[str | int | None]  # as records carry them: None if dropped
    event_time_texts: Sequence[str]  # ISO, as in the primary's records
    matrix: Matrix
    primary_scores: npt.NDArray[np.float64]


def merged(batches: Sequence[ShadowBatch]) -> ShadowBatch:
    """Queued batches as one, in order."""
    if len(batches) == 1:
        return batches[0]
    return ShadowBatch(
        event_ids=[i for b in batches for i in b.event_ids],
        entity_keys=[k for b in batches for k in b.entity_keys],
        event_time_texts=[t for b in batches for t in b.event_time_texts],
        matrix=np.concatenate([b.matrix for b in batches]),
        primary_scores=np.concatenate([b.primary_scores for b in batches]),
    )


class AgreementWindow:
    """Decision agreement with the primary over the last ``size`` events."""

    def __init__(self, size: int = AGREEMENT_WINDOW) -> None:
        self._agree: collections.deque[bool] = collections.deque(maxlen=size)
        self._count = 0

    def add(self, agree: Sequence[bool]) -> None:
        for value in agree:
            if len(self._agree) == self._agree.maxlen:
                self._count -= self._agree[0]
            self._agree.append(value)
            self._count += value

    @property
    def ratio(self) -> float:
        return self._count / len(self._agree) if self._agree else float("nan")


class ShadowRunner:
    def __init__(
        self,
        model: ShadowModel,
        *,
        pipeline: str,
        topic: str,
        threshold: float | None,
        queue_batches: int,
        publisher: Publisher,
        store: PredictionStore | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        task: Task = "classification",
    ) -> None:
        self.model = model
        self.topic = topic
        self.threshold = threshold if threshold is not None else 0.5
        # A regressor's score is a value, not a probability: no decisions, so no agreement
        # or changed decisions either; the score difference histogram compares them.
        self.decides = task == "classification"
        self.publisher = publisher
        self.store = store
        self.clock = clock
        self.agreement = AgreementWindow()
        self._queue: asyncio.Queue[ShadowBatch] = asyncio.Queue(maxsize=queue_batches)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"shadow-{model.name}"
        )
        labels = (pipeline, model.name)
        self._m_shed = metrics.shadow_shed.labels(*labels)
        self._m_backlog = metrics.shadow_backlog.labels(*labels)
        # Without decisions the agreement and changed-decision series do not exist (absent,
        # not a misleading 0).
        self._m_agreement = metrics.shadow_agreement.labels(*labels) if self.decides else None
        self._m_diff = metrics.shadow_score_diff.labels(*labels)
        self._m_changed = metrics.shadow_changed.labels(*labels) if self.decides else None
        self._m_infer = metrics.inference_seconds.labels(pipeline, model.name, "shadow")
        self._m_errors = metrics.shadow_errors.labels(*labels)
        self._backlog = 0  # events queued, for the backlog gauge
        self.scored = 0
        self.failed = 0

    def offer(self, batch: ShadowBatch) -> None:
        """Queue a batch for this shadow without ever waiting; shed it when full."""
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            self._m_shed.inc(len(batch.event_ids))
            return
        self._backlog += len(batch.event_ids)
        self._m_backlog.set(self._backlog)

    async def run(self) -> None:
        """Score queued batches until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            taken = [await self._queue.get()]
            events = len(taken[0].event_ids)
            while not self._queue.empty() and events < MERGED_EVENTS:
                taken.append(self._queue.get_nowait())
                events += len(taken[-1].event_ids)
            batch = merged(taken)
            self._backlog -= events
            self._m_backlog.set(self._backlog)
            model = self.model  # swap_model() may replace it; this batch keeps its own
            try:
                scores, elapsed, cpu = await loop.run_in_executor(
                    self._executor, _timed_score, model, batch.matrix
                )
                self._m_infer.observe(elapsed)
                await self._emit(batch, scores, model, cpu)
                self.scored += len(batch.event_ids)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failing shadow must never reach the primary: count, log, go on.
                self.failed += len(batch.event_ids)
                self._m_errors.inc(len(batch.event_ids))
                log.exception(
                    "shadow %s failed on a batch of %d", self.model.name, len(batch.event_ids)
                )
            finally:
                for _ in taken:
                    self._queue.task_done()

    def swap_model(self, model: ShadowModel) -> None:
        """Score the next batches with ``model`` (a version of the same model: its alias
        moved); a batch already scoring finishes, and is published, with the old one."""
        if model.name != self.model.name:
            msg = f"shadow {self.model.name}: cannot swap in another model, {model.name!r}"
            raise ValueError(msg)
        self.model = model

    async def drain(self) -> None:
        """Wait until every queued batch has been scored (or has failed)."""
        await self._queue.join()

    async def _emit(
        self,
        batch: ShadowBatch,
        scores: npt.NDArray[np.float64],
        model: ShadowModel,
        infer_seconds: float | None = None,
    ) -> None:
        primary = batch.primary_scores
        if self._m_agreement is not None and self._m_changed is not None:
            agree = (scores >= self.threshold) == (primary >= self.threshold)
            self.agreement.add(agree.tolist())
            self._m_agreement.set(self.agreement.ratio)
            changed = int((~agree).sum())
            if changed:
                self._m_changed.inc(changed)
        observe_many(self._m_diff, np.abs(scores - primary))
        decides, threshold = self.decides, self.threshold
        scored_at = iso_utc(self.clock())
        name, version = model.name, model.version
        # Only the online shadow has one; read after scoring, as the version (a reload
        # happens inside ``score``, in this shadow's thread, never between the two).
        learned: int | None = getattr(model, "learned", None)
        records = [
            OutputRecord(
                self.topic,
                event_id.encode(),
                encode_shadow_prediction(
                    event_id=event_id,
                    entity_key=entity_key,
                    model=name,
                    version=version,
                    score=score,
                    decision=score >= threshold if decides else None,
                    primary_score=primary_score,
                    event_time=event_time,
                    scored_at=scored_at,
                    learned_labels=learned,
                ),
            )
            for event_id, entity_key, event_time, score, primary_score in zip(
                batch.event_ids,
                batch.entity_keys,
                batch.event_time_texts,
                scores.tolist(),
                primary.tolist(),
                strict=True,
            )
        ]
        # Stored before published: whoever reads a shadow record and then sends its label
        # finds the shadow's score in the store (published first, the label join could
        # count the shadow as not having served that event).
        if self.store is not None:
            await self.store.put_shadow_scores(
                name, batch.event_ids, scores.tolist(), version, infer_seconds
            )
        await self.publisher.publish(records)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.model, "close", None)  # the online shadow's listener thread
        if close is not None:
            close()


def _timed_score(
    model: ShadowModel, matrix: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float64], float, float]:
    """The model's run with its wall time (the inference histogram, as the primary's) and
    its CPU time in the thread that runs it (as the primary's ``model_seconds``: promotion's
    latency guard compares the two per event)."""
    started, cpu = time.perf_counter(), time.thread_time()
    scores = model.score(matrix)
    return scores, time.perf_counter() - started, time.thread_time() - cpu
