"""The labelled log: every joined label with the exact vector it was served, kept on Kafka.

The prediction store forgets a prediction after about twice the label window, and the
learner's checkpoint keeps a model, not its data. So the labels consumer also appends what
each batch joined to the topic ``<pipeline>-labelled`` (``labels.labelled_topic``), which
``streamscore train --from-stream`` reads back: a challenger then learns from what serving
actually fed the models, so there is no training/serving skew by construction.

One Kafka record per label batch (split when large), keyed by the pipeline name, so one
partition keeps the batches in order. The record is a fixed binary layout, never a pickle:

    b"SSLB"  u8 format (1)  u32 header length (little-endian)  header  matrix

``header`` is a JSON object with one list per column of the batch, in join order::

    {"pipeline": str, "columns": [model input column, ...], "rows": n,
     "event_id": [str], "predicted_at": [epoch s], "label_time": [epoch s],
     "label": [number], "late": [bool], "primary": [model name], "primary_version": [int],
     "scores": {model: [score or null]}}

and ``matrix`` is the ``rows x len(columns)`` float32 little-endian input vectors, row-major.
``scores`` holds every model the join found a score of (the primary, each shadow, the
challenger, the online model); null where that model published none for the row.

The batch is encoded and sent beside the learner's own work and delivered before the labels'
offsets are committed: a crash can write a batch twice (a replay), never lose one, so a
reader keeps the first row of each event id.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from streams.errors import StreamscoreError
from streams.scoring.publish import Publisher
from streams.scoring.records import OutputRecord
from streams.spec import PipelineSpec

MAGIC = b"SSLB"
FORMAT = 1
_PREFIX = struct.Struct("<4sBI")
#: A record's target size: well under Kafka's default 1 MiB message limit.
RECORD_BYTES = 256 * 1024
_ROW_OVERHEAD_BYTES = 96  # an event id, two times, a label, a version, in the JSON header


class LabelledFormatError(StreamscoreError):
    """A record of the labelled topic is not a labelled batch this version can read."""


@dataclass(frozen=True)
class LabelledBatch:
    """One record of the labelled topic, decoded."""

    pipeline: str
    columns: tuple[str, ...]
    event_ids: list[str]
    predicted_at: npt.NDArray[np.float64]
    label_time: npt.NDArray[np.float64]
    labels: npt.NDArray[np.float64]
    late: list[bool]
    primary: list[str]
    primary_version: list[int]
    scores: dict[str, list[float | None]]
    matrix: npt.NDArray[np.float32]

    @property
    def rows(self) -> int:
        return len(self.event_ids)


def encode_batch(pipeline: str, columns: Sequence[str], joined: Sequence[dict[str, Any]]) -> bytes:
    """One labelled batch of ``joined`` records (``streams.learning.join.joined_record``)."""
    width = len(columns)
    matrix = (
        np.stack([r["vector"] for r in joined]).astype("<f4", copy=False)
        if joined
        else np.zeros((0, width), dtype="<f4")
    )
    if matrix.shape != (len(joined), width):
        msg = f"labelled: pipeline {pipeline}: vectors of shape {matrix.shape}, {width} columns"
        raise ValueError(msg)
    models = sorted({model for r in joined for model in r["scores"]})
    header = {
        "pipeline": pipeline,
        "columns": list(columns),
        "rows": len(joined),
        "event_id": [r["event_id"] for r in joined],
        "predicted_at": [r["predicted_at"] for r in joined],
        "label_time": [r["label_time"] for r in joined],
        "label": [r["label"] for r in joined],
        "late": [bool(r["late"]) for r in joined],
        "primary": [r.get("primary", "") for r in joined],
        "primary_version": [r.get("primary_version", 0) for r in joined],
        "scores": {m: [r["scores"].get(m) for r in joined] for m in models},
    }
    text = orjson.dumps(header)
    return _PREFIX.pack(MAGIC, FORMAT, len(text)) + text + matrix.tobytes()


_LISTS = ("event_id", "predicted_at", "label_time", "label", "late", "primary", "primary_version")


def decode_batch(data: bytes | None) -> LabelledBatch:
    """A labelled batch from a record's value; ``LabelledFormatError`` if it is not one.
    Only ever parses JSON and float32 bytes."""
    if data is None or len(data) < _PREFIX.size:
        msg = "labelled: a record too short to be a labelled batch"
        raise LabelledFormatError(msg)
    magic, version, size = _PREFIX.unpack_from(data)
    if magic != MAGIC or version != FORMAT:
        msg = f"labelled: not a labelled batch of format {FORMAT} ({magic!r}, format {version})"
        raise LabelledFormatError(msg)
    try:
        header = orjson.loads(data[_PREFIX.size : _PREFIX.size + size])
        columns = tuple(str(c) for c in header["columns"])
        rows = int(header["rows"])
        lists = {name: list(header[name]) for name in _LISTS}
        scores = {str(m): list(v) for m, v in dict(header["scores"]).items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        msg = f"labelled: a batch's header is malformed: {exc}"
        raise LabelledFormatError(msg) from exc
    if any(len(values) != rows for values in [*lists.values(), *scores.values()]):
        msg = f"labelled: a batch's header lists differ from rows={rows}"
        raise LabelledFormatError(msg)
    body = data[_PREFIX.size + size :]
    if len(body) != rows * len(columns) * 4:
        msg = f"labelled: {len(body)} matrix bytes for {rows} rows x {len(columns)} columns"
        raise LabelledFormatError(msg)
    matrix = np.frombuffer(body, dtype="<f4").reshape(rows, len(columns)).astype(np.float32)
    try:
        return LabelledBatch(
            pipeline=str(header["pipeline"]),
            columns=columns,
            event_ids=[str(e) for e in lists["event_id"]],
            predicted_at=np.asarray(lists["predicted_at"], dtype=np.float64),
            label_time=np.asarray(lists["label_time"], dtype=np.float64),
            labels=np.asarray(lists["label"], dtype=np.float64),
            late=[bool(v) for v in lists["late"]],
            primary=[str(m) for m in lists["primary"]],
            primary_version=[int(v) for v in lists["primary_version"]],
            scores=scores,
            matrix=matrix,
        )
    except (TypeError, ValueError) as exc:
        msg = f"labelled: a batch's values are malformed: {exc}"
        raise LabelledFormatError(msg) from exc


class LabelledLog:
    """Appends what a label batch joined to the pipeline's labelled topic."""

    def __init__(self, spec: PipelineSpec, topic: str, publisher: Publisher) -> None:
        self.topic = topic
        self._publisher = publisher
        self._pipeline = spec.name
        self._key = spec.name.encode()  # one partition: batches stay in order
        self._columns = spec.input_columns()
        width_bytes = 4 * len(self._columns) + _ROW_OVERHEAD_BYTES
        n_models = 1 + len(spec.shadows) + 2  # primary, shadows, challenger, online
        self._rows_per_record = max(1, RECORD_BYTES // (width_bytes + 24 * n_models))

    def records(self, joined: Sequence[dict[str, Any]]) -> list[OutputRecord]:
        step = self._rows_per_record
        chunks = (joined[i : i + step] for i in range(0, len(joined), step))
        encode = encode_batch
        return [
            OutputRecord(self.topic, self._key, encode(self._pipeline, self._columns, chunk))
            for chunk in chunks
        ]

    async def append(self, joined: Sequence[dict[str, Any]]) -> None:
        """Send the batch and wait until Kafka has it (raises otherwise)."""
        if joined:
            await self._publisher.publish(self.records(joined))
