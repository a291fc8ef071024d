"""The scoring pipeline for one micro-batch, as plain Python (no Faust, no broker).

decode + validate each message -> ONE feature-store read for the batch (its rows older than
``features.max_age_seconds`` at event time defaulted) -> ONE model run for the batch ->
prediction records. A message that fails validation becomes a dead-letter record
and never holds up the rest of its batch; so does an event whose prediction record cannot be
encoded (stage ``encode``), should one ever pass validation. Every input ends as exactly one
output record.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from features.errors import FeatureStoreError
from features.freshness import FeatureRows, FreshnessPolicy, ServedFeatures
from models.errors import ScoringError
from models.inputs import InputLayout, Matrix
from streams.errors import BadInput
from streams.metrics import DEFAULTED_REASONS, Metrics, observe_many
from streams.runtime.retrying import within_budget
from streams.scoring.canary import CANARY, PRIMARY, canary_rows
from streams.scoring.limits import InputLimits
from streams.scoring.privacy import NO_PRIVACY, Privacy
from streams.scoring.records import (
    InputMessage,
    OutputRecord,
    dead_letter_key,
    encode_dead_letter,
    encode_prediction,
    iso_utc,
)
from streams.scoring.validation import STAGE as DECODE
from streams.scoring.validation import Event, EventValidator
from streams.spec import PipelineSpec, feature_column

log = logging.getLogger(__name__)

ENCODE = "encode"  # the stage that turns a scored event into its prediction record
# What a record's data can raise while it is encoded: a time datetime cannot format
# (ValueError, OverflowError), an int beyond 64 bits (orjson.JSONEncodeError, a TypeError),
# text that is not UTF-8 (UnicodeEncodeError). Any other error is a bug: it fails loudly.
UNENCODABLE = (ValueError, TypeError, OverflowError)
_NONE_STALE: list[str] = []  # shared by the records of events with no stale view; never changed


class FeatureSource(Protocol):
    async def read_async(self, keys: Sequence[Any]) -> FeatureRows: ...


class Scorer(Protocol):
    name: str
    version: int

    def score(self, matrix: Matrix) -> npt.NDArray[np.float64]: ...


@dataclass
class ScoredBatch:
    """The outcome of one batch: records to publish, plus what later stages reuse."""

    predictions: list[OutputRecord] = field(default_factory=list)
    dead_letters: list[OutputRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # The entity key of each of ``events`` as records carry it (hashed, None if dropped:
    # the spec's privacy); ``events`` keep the real one, for the feature read.
    entity_keys: list[str | int | None] = field(default_factory=list)
    matrix: Matrix | None = None  # the exact vectors scored (shadows reuse them)
    scores: npt.NDArray[np.float64] | None = None  # the primary's, on every row
    # What each event was served: the primary's score, or on ``canary_rows`` the canary's.
    served_scores: npt.NDArray[np.float64] | None = None
    canary_rows: npt.NDArray[np.bool_] | None = None  # None: no canary served this batch
    canary_version: int = 0
    model: str = ""  # the primary that scored this batch (it can be swapped between batches)
    model_version: int = 0
    # ISO event times of ``events``, formatted once, while the primary's records are encoded,
    # for those records and every shadow's.
    event_time_texts: list[str] = field(default_factory=list)
    # The primary model's own time on the batch: the CPU time of its run in this thread
    # (no matrix building). ONNX Runtime runs on the calling thread (one intra-op thread,
    # models/scorer.py), so this is the run's whole cost, and neither the machine's load nor
    # a wait for the GIL counts in it (wall time did: a shadow in its own thread measured
    # ~1.9x the same model inline). Promotion's latency guard compares versions on it.
    model_seconds: float | None = None
    # For data quality (streams/monitoring/quality.py): which feature values of ``events``
    # were replaced by the spec's defaults (n, refs: missing or stale), and the field of
    # each of the batch's dead letters for an unknown category.
    feature_defaulted: npt.NDArray[np.bool_] | None = None
    unknown_categories: list[str] = field(default_factory=list)

    @property
    def records(self) -> list[OutputRecord]:
        return self.predictions + self.dead_letters

    @functools.cached_property
    def event_ids(self) -> list[str]:
        return [event.event_id for event in self.events]

    @property
    def event_times(self) -> npt.NDArray[np.float64]:
        return np.fromiter((e.time for e in self.events), dtype=np.float64, count=len(self.events))


class ScoringPipeline:
    """Scores micro-batches for one spec with one feature source and one primary model."""

    def __init__(
        self,
        spec: PipelineSpec,
        features: FeatureSource,
        scorer: Scorer,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        retry_for_seconds: float = 60.0,
        limits: InputLimits | None = None,
        privacy: Privacy = NO_PRIVACY,
    ) -> None:
        self.spec = spec
        self.privacy = privacy
        self.retry_for_seconds = retry_for_seconds
        self.features = features
        self.scorer = scorer
        self.clock = clock
        self.layout = InputLayout(spec)
        self.limits = limits if limits is not None else InputLimits()
        self.validator = EventValidator(
            spec.event, spec.entity.field, self.limits, withheld=privacy.withheld
        )
        self.feature_columns = [feature_column(ref) for ref in spec.features.refs]
        self.freshness = FreshnessPolicy(spec.features)
        self.threshold = spec.model.threshold
        # The canary's scorer while its version is in the registry (``swap_canary``).
        self.canary: Scorer | None = None
        self.canary_share = spec.model.canary.share if spec.model.canary is not None else 0.0
        name = spec.name
        self._metrics = metrics
        self._m_events = metrics.events.labels(name)
        self._m_misses = metrics.feature_misses.labels(name)
        self._m_defaulted = {
            reason: [metrics.defaulted_features.labels(name, c, reason) for c in
                     self.feature_columns]
            for reason in DEFAULTED_REASONS
        }  # fmt: skip
        self._m_age = [metrics.feature_age_seconds.labels(name, v) for v in self.freshness.views]
        self._m_retries = metrics.redis_retries.labels(name, "enrich")
        self._m_stage = {stage: metrics.stage_seconds.labels(name, stage) for stage in
                         ("decode", "enrich", "infer")}  # fmt: skip
        self._m_batch_size = metrics.batch_size.labels(name)
        self._dead_letters = metrics.dead_letters

    def swap_scorer(self, scorer: Scorer) -> None:
        """Use ``scorer`` from the next batch on (a batch already running keeps its own)."""
        self.scorer = scorer

    def swap_canary(self, scorer: Scorer | None) -> None:
        """Serve the canary's share with ``scorer`` from the next batch on (None: the
        primary serves every key, e.g. after a rollback removed the canary's alias)."""
        self.canary = scorer

    async def score_batch(self, messages: Sequence[InputMessage]) -> ScoredBatch:
        scorer = self.scorer  # one model for the whole batch, even if swapped meanwhile
        canary = self.canary
        self._m_events.inc(len(messages))
        self._m_batch_size.observe(len(messages))
        out = ScoredBatch()

        started = time.perf_counter()
        sources: list[InputMessage] = []  # the message of each event, for its dead letter
        check_key = self.limits.check_key
        for message in messages:
            try:
                check_key(DECODE, message.key)
                out.events.append(self.validator.parse(message.value, message.timestamp))
            except BadInput as bad:
                out.dead_letters.append(self._dead_letter(message, bad))
                if bad.reason == "unknown_category" and bad.field is not None:
                    out.unknown_categories.append(bad.field)
            else:
                sources.append(message)
        self._m_stage["decode"].observe(time.perf_counter() - started)
        if not out.events:
            return out
        self._apply_privacy(out)

        started = time.perf_counter()
        rows = self.freshness.apply(
            await self._read_features([event.entity_key for event in out.events]),
            out.event_times,
        )
        self._m_stage["enrich"].observe(time.perf_counter() - started)

        started = time.perf_counter()
        out.matrix = self.layout.build([event.fields for event in out.events], rows.values)
        cpu = time.thread_time()
        out.scores = scorer.score(out.matrix)
        out.model_seconds = time.thread_time() - cpu
        elapsed = time.perf_counter() - started
        self._m_stage["infer"].observe(elapsed)
        self._metrics.inference_seconds.labels(self.spec.name, scorer.name, "primary").observe(
            elapsed
        )
        out.model, out.model_version = scorer.name, scorer.version
        out.feature_defaulted = rows.defaulted
        out.served_scores = out.scores
        if canary is not None:
            self._serve_canary(canary, out)
        out.predictions, out.event_time_texts, failed = self._predictions(scorer, out, rows)
        self._count_features(rows)
        if failed:
            self._drop_unencodable(out, sources, failed)
        return out

    def _serve_canary(self, canary: Scorer, out: ScoredBatch) -> None:
        """The canary scores its share of the batch's keys (the real keys, not the hashed
        ones records carry: a spec that starts hashing keys keeps every key's arm)."""
        assert out.matrix is not None and out.scores is not None
        rows = canary_rows([event.entity_key for event in out.events], self.canary_share)
        if not rows.any():
            return
        started = time.perf_counter()
        served = out.scores.copy()
        try:
            served[rows] = canary.score(out.matrix[rows])
        except ScoringError as exc:
            self._drop_failed_canary(canary, exc)
            return  # the primary's scores serve its keys: records say served_by primary
        self._metrics.inference_seconds.labels(self.spec.name, canary.name, CANARY).observe(
            time.perf_counter() - started
        )
        out.served_scores, out.canary_rows, out.canary_version = served, rows, canary.version

    def _drop_failed_canary(self, canary: Scorer, exc: ScoringError) -> None:
        """A canary that fails to score is no reason to fail the batch (the primary has
        scored every row): this worker stops routing to it until its alias moves to another
        version, and says so loudly. A worker restarted on the same alias tries it again,
        and drops it again at its first failed batch, never in a loop of failed batches."""
        if self.canary is canary:
            self.canary = None
        name = self.spec.name
        self._metrics.canary_errors.labels(name, canary.name).inc()
        self._metrics.canary_version.labels(name, canary.name).set(0)
        log.error(
            "pipeline %s: canary %s v%d failed to score (%s); the primary serves its keys in"
            " this worker until the canary's alias moves to another version",
            name, canary.name, canary.version, exc,
        )  # fmt: skip

    def _drop_unencodable(
        self, out: ScoredBatch, sources: list[InputMessage], failed: dict[int, Exception]
    ) -> None:
        """Dead-letter the events whose records could not be encoded, and take them out of
        the batch, so that neither the prediction store nor a shadow sees them."""
        for i, exc in failed.items():
            event = out.events[i]
            detail = f"event {event.event_id[:80]!r}: {type(exc).__name__}: {exc}"
            log.warning("%s: %s", ENCODE, detail)
            out.dead_letters.append(
                self._dead_letter(sources[i], BadInput(ENCODE, "unencodable", detail))
            )
        keep = [i for i in range(len(out.events)) if i not in failed]
        out.events = [out.events[i] for i in keep]
        out.entity_keys = [out.entity_keys[i] for i in keep]
        assert out.matrix is not None and out.scores is not None
        out.matrix, out.scores = out.matrix[keep], out.scores[keep]
        assert out.served_scores is not None
        out.served_scores = out.served_scores[keep]
        if out.canary_rows is not None:
            out.canary_rows = out.canary_rows[keep]
        if out.feature_defaulted is not None:
            out.feature_defaulted = out.feature_defaulted[keep]

    def _apply_privacy(self, out: ScoredBatch) -> None:
        """Event ids and entity keys as records carry them. An event keeps its hashed id
        from here on (records, prediction store, shadows), and its real entity key only
        for the feature read."""
        privacy = self.privacy
        if privacy.hashes_id:
            for event in out.events:
                event.event_id = privacy.event_id(event.event_id)
        if privacy.changes_entity_key:
            out.entity_keys = [privacy.entity_key(event.entity_key) for event in out.events]
        else:
            out.entity_keys = [event.entity_key for event in out.events]

    async def _read_features(self, keys: list[Any]) -> FeatureRows:
        """The batch's one feature read, awaited on the event loop (a scoring thread measured
        far worse: each return from I/O waited for the GIL behind the loop, up to the 5 ms
        switch interval). A transient store failure (Redis restarting, a timeout) is retried
        with backoff, only this step, so nothing is counted twice; when it persists the error
        propagates, the worker stops, and since nothing was acked the batch is consumed again
        after restart."""
        return await within_budget(
            lambda: self.features.read_async(keys),
            seconds=self.retry_for_seconds,
            what="enrich: feature read",
            transient=(FeatureStoreError,),
            on_retry=self._m_retries.inc,
        )

    def _predictions(
        self, scorer: Scorer, out: ScoredBatch, rows: ServedFeatures
    ) -> tuple[list[OutputRecord], list[str], dict[int, Exception]]:
        """The prediction records and ISO event times of the events that could be encoded,
        and the error of each that could not, by its index in ``out.events``."""
        events, entity_keys = out.events, out.entity_keys
        assert out.served_scores is not None
        scores = out.served_scores
        # Records say which arm served them whenever the spec declares a canary.
        with_arm = self.spec.model.canary is not None
        on_canary: list[bool] = (
            out.canary_rows.tolist() if out.canary_rows is not None else [False] * len(events)
        )
        topic = self.spec.output.topic
        columns = self.feature_columns
        threshold = self.threshold
        scored_at = iso_utc(self.clock())  # once per batch, not per event
        defaulted_rows: list[list[bool]] = rows.defaulted.tolist()
        any_defaulted = cast(list[bool], rows.defaulted.any(axis=1).tolist())
        found = rows.entity_found.tolist()
        values = rows.values.tolist()
        ages = self._feature_ages(rows.ages)
        stale_views = self._stale_views(rows.stale) if self.freshness.enforced else None
        records = []
        event_times = []
        failed: dict[int, Exception] = {}
        pairs = zip(events, entity_keys, scores.tolist(), strict=True)
        for i, (event, entity_key, score) in enumerate(pairs):
            defaulted = (
                [c for c, d in zip(columns, defaulted_rows[i], strict=True) if d]
                if any_defaulted[i]
                else []
            )
            try:
                event_time = iso_utc(event.time)
                canary = on_canary[i]
                value = encode_prediction(
                    event_id=event.event_id,
                    entity_key=entity_key,
                    model=scorer.name,
                    version=out.canary_version if canary else scorer.version,
                    score=score,
                    decision=None if threshold is None else score >= threshold,
                    features=dict(zip(columns, values[i], strict=True)),
                    defaulted=defaulted,
                    entity_found=found[i],
                    feature_ages=ages[i],
                    stale_views=None if stale_views is None else stale_views[i],
                    event_time=event_time,
                    scored_at=scored_at,
                    served_by=(CANARY if canary else PRIMARY) if with_arm else None,
                )
                key = event.event_id.encode()
            except UNENCODABLE as exc:
                failed[i] = exc
                continue
            records.append(OutputRecord(topic, key, value))
            event_times.append(event_time)
        self._metrics.predictions.labels(self.spec.name, scorer.name).inc(len(records))
        if out.canary_rows is not None:
            served = int(out.canary_rows.sum()) - sum(on_canary[i] for i in failed)
            self._metrics.canary_predictions.labels(self.spec.name, scorer.name).inc(served)
        return records, event_times, failed

    def _feature_ages(self, ages: npt.NDArray[np.float64]) -> list[dict[str, float]]:
        """Each event's ``feature_age_seconds``: milliseconds are plenty for an age and keep
        the records short; NaN (no row) encodes as null."""
        views = self.freshness.views
        rounded = np.round(ages, 3)
        if len(views) == 1:  # the usual case: a dict display per event, no zip
            view = views[0]
            return [{view: age} for age in rounded[:, 0].tolist()]
        return [dict(zip(views, row, strict=True)) for row in rounded.tolist()]

    def _stale_views(self, stale: npt.NDArray[np.bool_]) -> list[list[str]]:
        """Each event's ``stale_views``; events with none share one empty list (records are
        encoded at once, nothing appends to it)."""
        lists: list[list[str]] = [_NONE_STALE] * len(stale)
        if not stale.any():
            return lists
        views = self.freshness.views
        for i in np.flatnonzero(stale.any(axis=1)).tolist():
            lists[i] = [view for view, old in zip(views, stale[i].tolist(), strict=True) if old]
        return lists

    def _count_features(self, rows: ServedFeatures) -> None:
        misses = int((~rows.entity_found).sum())
        if misses:
            self._m_misses.inc(misses)
        for reason, replaced in (("missing", rows.missing), ("stale", rows.stale_values)):
            for counter, count in zip(
                self._m_defaulted[reason], replaced.sum(axis=0).tolist(), strict=True
            ):
                if count:
                    counter.inc(count)
        for histogram, ages in zip(self._m_age, rows.ages.T, strict=True):
            observe_many(histogram, ages[~np.isnan(ages)])

    def _dead_letter(self, message: InputMessage, bad: BadInput) -> OutputRecord:
        self._dead_letters.labels(self.spec.name, bad.stage, bad.reason).inc()
        keep = self.privacy.keep_dead_letter_originals
        value = encode_dead_letter(
            message,
            pipeline=self.spec.name,
            stage=bad.stage,
            reason=bad.reason,
            error=bad.detail,
            at=self.clock(),
            keep_original=keep,
        )
        key = dead_letter_key(message.key, keep_original=keep)
        return OutputRecord(self.spec.output.dead_letter_topic, key, value)
