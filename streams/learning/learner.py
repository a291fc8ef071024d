"""The one online learner of a pipeline, and the snapshot its shadow scores with.

However many learning workers run, exactly one of them learns: the labels consumer
(``streams.learning.label_consumer``) gives every partition of the labels topic to one member of its
group, and hands the labels it joined straight to this service. One logical online model.
For each batch the learner

1. skips labels it has already learned (duplicates, or a replay after a restart),
2. updates the rolling evaluation of every model (primary, shadows, the online shadow) with
   the score that model *published* for the event (stored with the prediction: the
   "served" figure, the one to compare models on); a model that published no score for an
   event (a shed shadow batch) is not evaluated on it. It also scores the new labels with
   its own current state (progressive validation, the "as learned" figure: what the online
   model would have served with no staleness at all, kept apart and named as such),
3. learns them in order with ``learn_one``,
4. checkpoints the model, its evaluation and the ids it learned in ONE atomic Redis script.

With ``monitoring.slices``, step 2 also updates each model's evaluation of the event's
slice values (``streams.learning.slice_evaluation``; the values were stored with the
prediction), checkpointed in 4 with the rest.

A spec without ``online`` gets the same service minus 3: it evaluates every model on what it
served and checkpoints that evaluation with the ids it evaluated (so a replay counts nothing
twice).

Because 3 and 4 are atomic from Redis' point of view and the input is committed only after
4, a crash replays labels the checkpoint does not contain and skips those it does: learning
is idempotent per event id and survives restarts.

A learner that takes over (a new owner of the labels) first *claims* the model: it writes a
token of its own to the owner key, then resumes from the checkpoint. The checkpoint script
writes only while the owner key holds the writer's token, so a former owner that still
finishes a batch (stalled past its session, then woken) cannot overwrite what the new owner
resumed from: its checkpoint is refused (``LearnerFenced``) and its batch left to the owner.

The checkpoint script also publishes the new version on the pipeline's checkpoints channel
(Redis pub/sub): a scoring worker's online shadow hears it in a thread of its own and
reloads the snapshot before it scores its next batch, in the shadow's thread (never on the
scoring path). A missed message (a reconnect) is caught by a slow poll of the version key
every ``RELOAD_SECONDS``. Labels are taken in small adaptive batches (no waiting for a batch
to fill: whatever has arrived), so the online shadow serves a state that has learned the
labels that arrived before the batch it scores, minus those still on their way through the
label join and the learner (measured in README, "Shadows and labels").
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson
import redis
import redis.asyncio as aioredis

from models.evaluation import EvaluationStateError, RollingEvaluation
from models.inputs import Matrix
from models.online import OnlineLearner, SnapshotError
from streams.actions.evidence import EvidenceLog, entries
from streams.actions.guard import GuardStateError
from streams.actions.rollback import GuardRunner
from streams.errors import StreamscoreError
from streams.learning.concept_drift import (
    Change,
    ConceptDrift,
    ConceptDriftStateError,
    errors_of,
)
from streams.learning.realized import RealizedAccuracy, RealizedStateError
from streams.learning.slice_evaluation import SlicedEvaluation, restored
from streams.metrics import Metrics, observe_many
from streams.monitoring.slices import SliceLayout
from streams.runtime.connections import RedisConnection
from streams.runtime.retrying import REDIS_TRANSIENT, within_budget
from streams.scoring.canary import arm_model_name
from streams.scoring.prediction_store import Keys, bucket_seconds
from streams.spec import PipelineSpec

log = logging.getLogger(__name__)

#: The online shadow's fallback poll of the version key (checkpoints are pushed too).
RELOAD_SECONDS = 1.0
#: Checkpoints whose label counts an online shadow remembers (it serves the newest).
KEPT_CHECKPOINTS = 64
#: How long the announcement thread blocks in one read (and so how fast it stops).
LISTEN_SECONDS = 0.5

CHECKPOINT = """
if redis.call('GET', ARGV[15]) ~= ARGV[16] then
  return -1
end
local ttl = tonumber(ARGV[1])
local online = ARGV[3] ~= ''  -- without an online model: the evaluation alone
if online then
  redis.call('SET', ARGV[2], ARGV[3])
  redis.call('SET', ARGV[4], ARGV[5])
  redis.call('SET', ARGV[8], ARGV[9])
end
redis.call('SET', ARGV[6], ARGV[7])
redis.call('SET', ARGV[17], ARGV[18])  -- concept drift and realized accuracy
local i = 22
if ARGV[19] ~= '' then  -- the slice evaluations (monitoring.slices): a hash
  if ARGV[20] == 'replace' then
    redis.call('DEL', ARGV[19])
  end
  for _ = 1, tonumber(ARGV[21]) do
    redis.call('HSET', ARGV[19], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
end
local n_learned = tonumber(ARGV[11])
for _ = 1, n_learned do
  redis.call('SET', ARGV[i], '1', 'EX', ttl)
  i = i + 1
end
while i < #ARGV do
  redis.call('INCRBY', ARGV[i], ARGV[i + 1])
  redis.call('EXPIRE', ARGV[i], ttl)
  i = i + 2
end
local consumed = redis.call('INCRBY', ARGV[12], ARGV[13])
if online then
  redis.call('PUBLISH', ARGV[10], 'checkpoint ' .. ARGV[5] .. ' ' .. consumed .. ' ' .. ARGV[14])
end
return n_learned
"""


class LearnerFenced(StreamscoreError):
    """Another learner claimed the model since this one did: its checkpoint was refused."""


#: Per model, a label batch's served scores, labels and prediction times, in learning order.
Served = dict[str, tuple[list[float], list[Any], list[float]]]


def served_by_model(fresh: Sequence[dict[str, Any]]) -> Served:
    """The batch grouped by model once, for its evaluation and its performance watch."""
    served: Served = {}
    for record in fresh:
        for model, score in record["scores"].items():
            scores, labels, times = served.setdefault(model, ([], [], []))
            scores.append(score)
            labels.append(record["label"])
            times.append(record["predicted_at"])
    return served


class LearnerService:
    def __init__(
        self,
        spec: PipelineSpec,
        client: aioredis.Redis,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        retry_for_seconds: float = 60.0,
        guard: GuardRunner | None = None,
    ) -> None:
        if spec.labels is None:
            msg = f"pipeline {spec.name}: a learner needs 'labels' in the spec"
            raise ValueError(msg)
        self.spec = spec
        self.online = spec.online  # None: evaluate every model, learn nothing
        self.window = spec.labels.window_seconds
        # Accuracy's decision rule; a regression evaluation has none and ignores it.
        self.threshold = spec.model.decision_threshold
        self.task = spec.task
        self.keys = Keys(spec.name)
        self.client = client
        self.clock = clock
        self.retry_for_seconds = retry_for_seconds  # a Redis outage shorter than this: waited
        self.learner: OnlineLearner | None = None
        self._claimed = False  # the owner key holds this learner's token (``load``)
        self._owner_token = ""  # written to the owner key by ``load``
        self.evaluation = RollingEvaluation(task=self.task)  # served scores, every model
        self.as_learned = RollingEvaluation(task=self.task)  # the online model's own
        self.slice_layout = SliceLayout.of(spec)  # monitoring.slices; None without
        self.sliced = self._new_sliced()
        self._checkpoint = client.register_script(CHECKPOINT)
        name = spec.name
        self._m_learned = (
            metrics.online_learned.labels(name, self.online.name) if self.online else None
        )
        self._m_retries = metrics.redis_retries.labels(name, "learn")
        self._m_duplicates = metrics.labels.labels(name, "duplicate")
        self._m_metric = metrics.online_metric
        self._m_as_learned = metrics.online_as_learned_metric
        self._m_slice_metric = metrics.slice_online_metric
        # Created on its first value: absent, not 0, before any prediction's window closed.
        self._m_coverage = metrics.label_coverage
        # Promotion's evidence: each learned label with every registry version's served score.
        self._evidence = EvidenceLog(client, spec.name, spec.actions.promote.evidence_labels)
        # actions.guard: judges each new version's served labels; its state is checkpointed
        # with the concept-drift detectors, its rollbacks run after the checkpoint.
        self.guard = guard
        self._init_performance(metrics)

    def forget(self) -> None:
        """Drop the state in memory: the next batch claims the model and resumes from the
        checkpoint (another learner may have learned since this one last did)."""
        self.learner = None
        self._claimed = False

    def withdraw_figures(self) -> None:
        """Stop exporting the figures this learner computed (rolling evaluation, coverage,
        concept drift's error means, realized accuracy): another worker owns the labels
        now, and values frozen at the hand-over would sit beside its live ones. Counters
        stay: their sums across workers remain true. One pipeline per worker process, so
        each family is cleared whole."""
        for family in (
            self._m_metric, self._m_as_learned, self._m_slice_metric, self._m_coverage,
            self._m_error_mean, self._m_realized, self._m_difference, self._m_realized_start,
        ):  # fmt: skip
            family.clear()

    async def load(self) -> None:
        """Claim the model, then resume from the last checkpoint, or start a new model."""
        keys = self.keys
        token = uuid.uuid4().hex
        await self._redis("owner claim", lambda: self.client.set(keys.learner_owner, token))
        self._owner_token = token
        self._claimed = True
        snapshot, evaluation, as_learned, performance = await self._redis(
            "snapshot read",
            lambda: self.client.mget(
                keys.snapshot, keys.evaluation, keys.as_learned_evaluation, keys.performance
            ),
        )
        self._restore_performance(performance)
        sliced = None
        if self.slice_layout is not None:
            # redis-py types hgetall as sync-or-async; on this client it is awaitable.
            read = cast(
                Callable[[], Awaitable[Any]], lambda: self.client.hgetall(keys.slice_evaluation)
            )
            sliced = await self._redis("slice evaluations read", read)
        if self.online is None:
            self.evaluation = self._restored(evaluation, "rolling evaluation")
            self.sliced = self._new_sliced(sliced)
            return
        columns = self.spec.input_columns()
        if snapshot is not None:
            try:
                self.learner = OnlineLearner.from_bytes(snapshot, spec=self.online, columns=columns)
            except SnapshotError as exc:  # the spec or River changed: its state no longer fits
                log.warning("pipeline %s: starting a new online model: %s", self.spec.name, exc)
            else:
                self.evaluation = self._restored(evaluation, "rolling evaluation")
                self.as_learned = self._restored(as_learned, "as-learned evaluation")
                self.sliced = self._new_sliced(sliced)
                return
        self.learner = OnlineLearner(self.online, columns)
        self.sliced = self._new_sliced()  # a new model: its checkpoint replaces the old ones

    def _new_sliced(self, stored: dict[bytes, bytes] | None = None) -> SlicedEvaluation | None:
        if self.slice_layout is None:
            return None
        if stored is None:
            return SlicedEvaluation(self.slice_layout, self.task)
        return restored(stored, self.slice_layout, self.task, self.spec.name)

    def _restored(self, data: bytes | None, what: str) -> RollingEvaluation:
        if data is not None:
            try:
                return RollingEvaluation.from_bytes(data, task=self.task)
            except EvaluationStateError as exc:
                log.warning("pipeline %s: starting a new %s: %s", self.spec.name, what, exc)
        return RollingEvaluation(task=self.task)

    async def handle(self, records: Sequence[dict[str, Any]]) -> int:
        """Learn a batch of joined labels (``streams.learning.join.joined_record``); returns how
        many were new. Raises ``LearnerFenced`` if another learner claimed the model."""
        if not self._claimed:
            await self.load()
        learned_keys = [self.keys.learned(r["event_id"]) for r in records]
        flags = await self._redis("learned-ids read", lambda: self.client.mget(learned_keys))
        fresh: list[dict[str, Any]] = []
        seen: set[str] = set()
        for record, flag in zip(records, flags, strict=True):
            if flag is not None or record["event_id"] in seen:
                continue
            seen.add(record["event_id"])
            fresh.append(record)
        duplicates = len(records) - len(fresh)
        if duplicates:
            self._m_duplicates.inc(duplicates)
        if self.guard is not None:
            await self.guard.look()
        # River is pure Python: learning and serializing the checkpoint would stall the event
        # loop (and with it the scoring agent), so they run in a thread.
        args = await asyncio.to_thread(self._learn, fresh, len(records))
        # Atomic and idempotent (the same state again), so safe to retry.
        written = await self._redis("checkpoint", lambda: self._checkpoint(args=args))
        if written == -1:
            self.forget()  # what this batch did in memory is not the model's state
            msg = (
                f"learn: pipeline {self.spec.name}: another learning worker claimed the online"
                " model; this one's checkpoint was refused"
            )
            raise LearnerFenced(msg)
        # After the checkpoint: a replayed batch's labels are not fresh, so none counts twice.
        evidence = entries(fresh, skip=self.online.name if self.online is not None else None)
        await self._redis("evidence", lambda: self._evidence.add(evidence))
        if self.guard is not None:  # only the owner gets here: a fenced learner never acts
            await self.guard.judge()
        self._publish_metrics(len(fresh))
        await self._update_coverage()
        return len(fresh)

    def _evaluate(self, fresh: list[dict[str, Any]], served: Served) -> None:
        """Each model on the scores it published, in learning order: one call per model
        for the batch (each model's window is its own, so only the order within a model
        matters), and the same per slice value's evaluation (monitoring.slices)."""
        for model, (scores, labels, _) in sorted(served.items()):
            self.evaluation.update_many(model, scores, labels, self.threshold)
        if self.sliced is None:
            return
        # (slice value's evaluation, model) -> that evaluation, its scores and labels.
        sliced: dict[tuple[int, str], tuple[RollingEvaluation, list[float], list[Any]]] = {}
        for record in fresh:
            for evaluation in self.sliced.of(record.get("slices")):
                for model, score in record["scores"].items():
                    key = (id(evaluation), model)
                    if key not in sliced:
                        sliced[key] = (evaluation, [], [])
                    sliced[key][1].append(score)
                    sliced[key][2].append(record["label"])
        for (_, model), (evaluation, scores, labels) in sliced.items():
            evaluation.update_many(model, scores, labels, self.threshold)

    async def _redis(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        return await within_budget(
            call, seconds=self.retry_for_seconds, what=f"learn: {what}",
            transient=REDIS_TRANSIENT, on_retry=self._m_retries.inc,
        )  # fmt: skip

    def _learn(self, fresh: list[dict[str, Any]], taken: int) -> list[Any]:
        """Evaluate then learn ``fresh`` in order; return the checkpoint script's arguments."""
        learner = self.learner  # None without an online model: the served evaluation alone
        online = self.online.name if self.online is not None else ""
        self._changes.clear()  # those of a batch whose checkpoint failed: not counted
        if fresh:
            matrix = np.stack([r["vector"] for r in fresh])
            labels = [r["label"] for r in fresh]
            # Before learning: progressive validation (the online model's "as learned").
            own = learner.predict_many(matrix).tolist() if learner is not None else None
            served = served_by_model(fresh)
            self._evaluate(fresh, served)
            if own is not None:
                self.as_learned.update_many(online, own, labels, self.threshold)
            if learner is not None:
                learner.learn(matrix, labels)
            self._watch_performance(served)
            if self.guard is not None:
                self.guard.guard.observe(fresh)
        ttl = max(1, int(self.window * 4))
        size = bucket_seconds(self.window)
        joined: dict[int, int] = {}
        for record in fresh:
            if not record.get("late"):
                bucket = int(record["predicted_at"] // size)
                joined[bucket] = joined.get(bucket, 0) + 1
        args: list[Any] = [
            ttl,
            # Empty without an online model: the script then writes the evaluation alone.
            self.keys.snapshot, learner.to_bytes() if learner else b"",
            self.keys.version, learner.version if learner else "",
            self.keys.evaluation, self.evaluation.to_bytes(),
            self.keys.as_learned_evaluation, self.as_learned.to_bytes() if learner else b"",
            self.keys.checkpoints,
            len(fresh),
            self.keys.labels_consumed, taken,  # every joined label taken in, duplicates too
            repr(self.clock()),  # the checkpoint's time: the snapshot's age is from it
            self.keys.learner_owner, self._owner_token,  # written only by the owner
            self.keys.performance, self._performance_state(),
            # The slice values this batch updated; '' without monitoring.slices.
            self.keys.slice_evaluation if self.sliced is not None else "", *self._sliced_args(),
        ]  # fmt: skip
        args += [self.keys.learned(r["event_id"]) for r in fresh]
        for bucket, count in joined.items():
            args += [self.keys.joined_bucket(bucket), count]
        return args

    def _sliced_args(self) -> list[Any]:
        """'replace' or '', how many hash fields, then each field and its evaluation."""
        if self.sliced is None:
            return ["", 0]
        replace, flat = self.sliced.touched()
        return ["replace" if replace else "", len(flat) // 2, *flat]

    def _publish_metrics(self, learned: int) -> None:
        if learned and self._m_learned is not None:
            self._m_learned.inc(learned)
        for model, values in self.evaluation.snapshot().items():
            for metric, value in values.items():
                if metric != "count":
                    self._m_metric.labels(self.spec.name, model, metric).set(value)
        for model, values in self.as_learned.snapshot().items():
            for metric, value in values.items():
                if metric != "count":
                    self._m_as_learned.labels(self.spec.name, model, metric).set(value)
        if self.sliced is not None:
            for model, field, label, metric, value in self.sliced.metrics():
                self._m_slice_metric.labels(self.spec.name, model, field, label, metric).set(value)
        self._publish_performance()

    # --- concept drift (ADWIN on each model's errors) and realized accuracy per window ------

    def _init_performance(self, metrics: Metrics) -> None:
        spec, performance = self.spec, self.spec.monitoring.performance
        self.concept_drift = ConceptDrift(performance.adwin_delta, performance.error_history)
        # Accuracy beside the label-free estimate: classifiers only (a regressor has none).
        self.realized = self._new_realized()
        self._changes: list[Change] = []  # found by the batch in hand, counted once written
        models = [spec.model.name, *(s.name for s in spec.shadows)]
        models += [spec.online.name] if spec.online is not None else []
        models += [spec.challenger_shadow] if spec.challenger_shadow is not None else []
        # The canary's arm: the events it served carry its score under this name.
        models += [arm_model_name(spec.model.name)] if spec.model.canary is not None else []
        self._models = frozenset(models)
        self._m_detections = metrics.concept_drift_detections
        for model in models:  # at 0 from the start: a first detection is an increase
            for direction in ("worse", "better"):
                self._m_detections.labels(spec.name, model, direction)
        # Created on their first value: absent, not 0, before a window has its labels.
        self._m_error_mean = metrics.concept_drift_error_mean
        self._m_realized = metrics.realized_accuracy
        self._m_difference = metrics.estimated_minus_realized_accuracy
        self._m_realized_start = metrics.realized_accuracy_window_start

    def _new_realized(self) -> RealizedAccuracy | None:
        if self.task != "classification":
            return None
        monitoring = self.spec.monitoring
        return RealizedAccuracy(
            monitoring.performance_bucket_seconds, monitoring.performance.min_labels
        )

    def _restore_performance(self, data: bytes | None) -> None:
        performance = self.spec.monitoring.performance
        delta, history = performance.adwin_delta, performance.error_history
        self.concept_drift = ConceptDrift(delta, history)
        self.realized = self._new_realized()
        guard = self.guard.guard if self.guard is not None else None
        if guard is not None:
            guard.clear()
        if data is None:
            return
        try:
            state = orjson.loads(data)
            if not isinstance(state, dict):
                msg = f"not an object: {data[:40]!r}"
                raise ConceptDriftStateError(msg)
            self.concept_drift = ConceptDrift.from_data(
                state.get("concept_drift"), delta, history, models=self._models
            )
            if self.realized is not None and "realized" in state:
                self.realized = RealizedAccuracy.from_data(
                    state["realized"], self.realized.bucket_seconds, self.realized.min_labels
                )
        except (orjson.JSONDecodeError, ConceptDriftStateError, RealizedStateError) as exc:
            log.warning(
                "pipeline %s: starting new concept-drift detectors and realized accuracy: %s",
                self.spec.name, exc,
            )  # fmt: skip
            return
        if guard is not None and state.get("guard") is not None:
            try:
                guard.restore(state["guard"])
            except GuardStateError as exc:
                guard.clear()
                log.warning("pipeline %s: starting a new guard: %s", self.spec.name, exc)

    def _performance_state(self) -> bytes:
        state: dict[str, Any] = {"concept_drift": self.concept_drift.to_data()}
        if self.realized is not None:
            state["realized"] = self.realized.to_data()
        if self.guard is not None:
            state["guard"] = self.guard.guard.to_data()
        return orjson.dumps(state)

    def _watch_performance(self, served: Served) -> None:
        """Each model's errors on the batch to its detector, in learning order; the
        primary's labelled predictions to the realized accuracy (numpy per model)."""
        threshold = self.threshold if self.task == "classification" else None
        for model, (scores, labels, times) in sorted(served.items()):
            s = np.asarray(scores, dtype=np.float64)
            y = np.asarray(labels, dtype=np.float64)
            self._changes += self.concept_drift.update(model, errors_of(s, y, threshold))
            if model == self.spec.model.name and self.realized is not None:
                self.realized.update(np.asarray(times, dtype=np.float64), s, y, self.threshold)

    def _publish_performance(self) -> None:
        name = self.spec.name
        for change in self._changes:
            direction = "worse" if change.worse else "better"
            self._m_detections.labels(name, change.model, direction).inc()
            say = log.warning if change.worse else log.info
            say(
                "pipeline %s: concept drift: the errors of model %s changed (ADWIN): mean"
                " error %.4f -> %.4f (%s)",
                name, change.model, change.before, change.after, direction,
            )  # fmt: skip
        self._changes.clear()
        for model in self.concept_drift.models:
            if (mean := self.concept_drift.error_mean(model)) is not None:
                self._m_error_mean.labels(name, model).set(mean)
        window = self.realized.latest() if self.realized is not None else None
        if window is not None:
            primary = self.spec.model.name
            self._m_realized.labels(name, primary).set(window.realized)
            self._m_difference.labels(name, primary).set(window.estimated - window.realized)
            self._m_realized_start.labels(name, primary).set(window.start)

    async def _update_coverage(self) -> None:
        """Share of predictions made in the last closed stretch (older than the window)
        that got a label: 10 buckets ending one window ago."""
        size = bucket_seconds(self.window)
        last = int((self.clock() - self.window) // size) - 1
        buckets = range(last - 9, last + 1)
        predicted_keys = [self.keys.predicted_bucket(b) for b in buckets]
        joined_keys = [self.keys.joined_bucket(b) for b in buckets]
        predicted = await self._redis("coverage read", lambda: self.client.mget(predicted_keys))
        joined = await self._redis("coverage read", lambda: self.client.mget(joined_keys))
        total = sum(int(v) for v in predicted if v is not None)
        if total:
            covered = sum(int(v) for v in joined if v is not None)
            self._m_coverage.labels(self.spec.name).set(covered / total)


class CheckpointAnnouncements:
    """What the pipeline's checkpoints channel says, heard by a daemon thread (redis-py's
    blocking pub/sub client): ``checkpoint <version> <labels consumed> <time>`` from the
    learner, ``forwarded <labels>`` from the labels consumer. Messages are only ever parsed as
    numbers; anything else is ignored."""

    def __init__(self, redis: RedisConnection, channel: str) -> None:
        self.latest = 0  # the newest version announced
        self.forwarded = 0  # labels the labels consumer has handed to the learner, in all
        self._checkpoints: collections.OrderedDict[int, tuple[int, float]] = (
            collections.OrderedDict()
        )  # version -> (labels consumed, written at), the last few
        self._redis = redis
        self._channel = channel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="online-checkpoints", daemon=True)
        self._thread.start()

    def checkpoint(self, version: int) -> tuple[int, float] | None:
        """(labels consumed, written at) of ``version`` if it was heard."""
        return self._checkpoints.get(version)

    def _listen(self) -> None:
        while not self._stop.is_set():
            client = self._redis.client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=LISTEN_SECONDS)
                    if message is not None:
                        self.heard(message.get("data"))
            except redis.RedisError as exc:  # the version-key poll covers the gap
                log.warning("online shadow: checkpoint channel %s: %s", self._channel, exc)
                self._stop.wait(RELOAD_SECONDS)
            finally:
                pubsub.close()
                client.close()

    def heard(self, data: object) -> None:
        words = data.split() if isinstance(data, bytes) else []
        try:
            if len(words) == 4 and words[0] == b"checkpoint":
                version, consumed, at = int(words[1]), int(words[2]), float(words[3])
                self._checkpoints[version] = (consumed, at)
                while len(self._checkpoints) > KEPT_CHECKPOINTS:
                    self._checkpoints.popitem(last=False)
                self.latest = max(self.latest, version)
                return
            if len(words) == 2 and words[0] == b"forwarded":
                self.forwarded = max(self.forwarded, int(words[1]))
                return
        except ValueError:
            pass
        log.warning("online shadow: ignored a message on %s: %.60r", self._channel, data)

    def close(self) -> None:
        self._stop.set()


class OnlineSnapshotModel:
    """The online model as a shadow: the learner's latest snapshot, reloaded on change.

    Called from its shadow's thread, so it uses a synchronous Redis client.
    """

    def __init__(
        self, spec: PipelineSpec, redis: RedisConnection, metrics: Metrics | None = None
    ) -> None:
        assert spec.online is not None
        self.name = spec.online.name
        self._m_behind = self._m_age = None
        if metrics is not None:
            self._m_behind = metrics.online_labels_behind.labels(spec.name, self.name)
            self._m_age = metrics.online_snapshot_age_seconds.labels(spec.name, self.name)
        self._spec = spec
        self._keys = Keys(spec.name)
        self._client = redis.client()
        self._learner = OnlineLearner(spec.online, spec.input_columns())
        self._checked_at = 0.0
        self._announced = CheckpointAnnouncements(redis, self._keys.checkpoints)

    @property
    def version(self) -> int:
        return self._learner.version

    @property
    def learned(self) -> int:
        """Labels the serving snapshot has learned (its shadow records carry it)."""
        return self._learner.learned

    def score(self, matrix: Matrix) -> npt.NDArray[np.float64]:
        now = time.monotonic()
        announced = self._announced.latest > self._learner.version
        if announced or now - self._checked_at >= RELOAD_SECONDS:
            self._checked_at = now
            self._reload()
        scores = self._learner.predict_many(matrix)
        self._observe_staleness(len(scores))
        return scores

    def _observe_staleness(self, n: int) -> None:
        """Per prediction: labels handed to the learner that the serving snapshot lacks,
        and its age. Unknown (not observed) for a snapshot whose announcement was missed."""
        heard = self._announced.checkpoint(self._learner.version)
        if heard is None or self._m_behind is None or self._m_age is None or not n:
            return
        consumed, written_at = heard
        behind = max(0, self._announced.forwarded - consumed)
        observe_many(self._m_behind, np.full(n, float(behind)))
        observe_many(self._m_age, np.full(n, max(0.0, time.time() - written_at)))

    def close(self) -> None:
        self._announced.close()

    def _reload(self) -> None:
        version: bytes | None = self._client.get(self._keys.version)  # type: ignore[assignment]
        if version is None or int(version) == self._learner.version:
            return
        snapshot: bytes | None = self._client.get(self._keys.snapshot)  # type: ignore[assignment]
        if snapshot is not None:
            # Built from this worker's spec, never from the snapshot's: a snapshot of another
            # model or layout (or not a snapshot) raises, and the shadow keeps its model.
            online, columns = self._learner.spec, self._learner.columns
            self._learner = OnlineLearner.from_bytes(snapshot, spec=online, columns=columns)
