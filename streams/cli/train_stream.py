"""``streamscore train --from-stream``: a challenger fitted on the labelled vectors the
service served.

Reads the pipeline's labelled topic (``streams.learning.labelled``) without a consumer
group, every partition from its beginning (or from the first record written at or after
``--since``) up to its end offset when the command started; builds the frame
(``streams.learning.labelled_frame``); fits the ``training.models`` entry named like the
primary model exactly as ``streamscore train`` does (``models.training``), measured on the
latest fifth of the rows by prediction time; registers it with the alias ``challenger``
and its lineage in the manifest. Scoring workers then shadow it
(``streams.shadows.challenger``).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.structs import TopicPartition

from models.errors import TrainingError
from models.manifest import StreamLineage, TrainingData
from models.registry import CHALLENGER, ModelRegistry, ModelVersion
from streams.learning.labelled import LabelledBatch, LabelledFormatError, decode_batch
from streams.learning.labelled_frame import (
    LabelledRecord,
    StreamFrame,
    build_frame,
    iso_utc,
    tail_rows,
)
from streams.runtime.connections import KafkaConnection
from streams.runtime.topics import topic_partitions
from streams.settings import Settings
from streams.spec import PipelineSpec

#: The held-out tail's share of the rows, as ``streamscore train`` holds out.
HOLDOUT_FRACTION = 0.2
STAGE = "train --from-stream"


@dataclass(frozen=True)
class StreamTraining:
    version: ModelVersion
    frame: StreamFrame


async def read_labelled(
    spec: PipelineSpec, settings: Settings, since: float | None
) -> list[LabelledRecord]:
    """Every record of the labelled topic (from ``since``, epoch seconds of its write time,
    when given) up to the end offsets at the start."""
    topic = _topic(spec)
    kafka = KafkaConnection.from_settings(settings)
    count = await topic_partitions(kafka, topic)
    if count is None:
        msg = (
            f"{STAGE}: pipeline {spec.name}: topic {topic!r} does not exist (no learning"
            " worker has joined labels yet?)"
        )
        raise TrainingError(spec.model.name, msg)
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    await kafka.start(consumer)
    records: list[LabelledRecord] = []
    try:
        consumer.assign(partitions)
        # Seek before asking the end offsets: on Apache Kafka, asking them first resolves
        # the fresh assignment's position to the end, and seek_to_beginning then finds
        # nothing to read (measured: 0 records where Tansu gave all).
        if since is None:
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
        else:
            target = int(since * 1000)
            found = await consumer.offsets_for_times({tp: target for tp in partitions})
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                at = found.get(tp)
                # Tansu answers a time past the last record with an earlier record's offset.
                start = at.offset if at is not None and at.timestamp >= target else ends[tp]
                consumer.seek(tp, start)
        pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, batch in fetched.items():
                records += [
                    LabelledRecord(tp.partition, r.offset, _decoded(r.value))
                    for r in batch
                    if r.offset < ends[tp]
                ]
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return records


def train_challenger(
    spec: PipelineSpec,
    settings: Settings,
    records: list[LabelledRecord],
    *,
    since: float | None = None,
    min_rows: int | None = None,
) -> StreamTraining:
    """Fit, register and alias the challenger from ``records``; ``TrainingError`` when the
    frame is too small or has one class."""
    name = spec.model.name
    if spec.training is None:
        msg = f"{STAGE}: the spec has no 'training' section (its estimator is what is fitted)"
        raise TrainingError(name, msg)
    minimum = min_rows if min_rows is not None else spec.training.min_stream_rows
    topic = _topic(spec)
    frame, sources = build_frame(records, spec.name, tuple(spec.input_columns()))
    if frame.rows < minimum:
        left_out = sources.duplicate_rows + sources.skipped_rows
        unreadable = (
            f", {sources.unreadable_records} unreadable records skipped"
            if sources.unreadable_records
            else ""
        )
        msg = (
            f"{STAGE}: {frame.rows} labelled rows on {topic!r}"
            f"{'' if since is None else ' since ' + iso_utc(since)} (after {left_out} repeated"
            f" or of another layout were left out{unreadable}); at least {minimum} needed"
            " (training.min_stream_rows, --min-rows)"
        )
        raise TrainingError(name, msg)
    holdout = tail_rows(frame.rows, HOLDOUT_FRACTION)
    sha256 = frame.sha256()
    lineage = StreamLineage(
        topic=topic,
        offsets=sources.offsets,
        rows=frame.rows,
        sha256=sha256,
        since=None if since is None else iso_utc(since),
        first_predicted_at=iso_utc(float(frame.predicted_at[0])),
        last_predicted_at=iso_utc(float(frame.predicted_at[-1])),
        holdout_from=iso_utc(float(frame.predicted_at[frame.rows - holdout])),
        train_rows=frame.rows - holdout,
        holdout_rows=holdout,
        duplicate_rows=sources.duplicate_rows,
        skipped_rows=sources.skipped_rows,
        unreadable_records=sources.unreadable_records,
    )
    data = TrainingData(
        path=f"kafka:{topic}",
        sha256=sha256,
        rows=frame.rows,
        train_rows=frame.rows - holdout,
        holdout_rows=holdout,
    )
    from models.training import train_on_vectors  # scikit-learn only when training

    registry = ModelRegistry(settings.model_dir)
    version = train_on_vectors(
        spec, name, frame.matrix, frame.labels, registry,
        holdout_rows=holdout, data=data, lineage=lineage,
    )  # fmt: skip
    registry.set_alias(name, CHALLENGER, version.version)
    return StreamTraining(version, frame)


def _topic(spec: PipelineSpec) -> str:
    topic = spec.labelled_topic
    if topic is None:
        msg = (
            f"{STAGE}: pipeline {spec.name} keeps no labelled topic (it needs 'labels' and"
            " labels.keep_labelled: true)"
        )
        raise TrainingError(spec.model.name, msg)
    return topic


def _decoded(value: bytes | None) -> LabelledBatch | None:
    try:
        return decode_batch(value)
    except LabelledFormatError:
        return None
