"""A training frame from labelled-topic records, and what it was built from.

The records (``streams.learning.labelled``) are read in offset order per partition. Each
event id counts once (its first row: a replayed label batch is written again), rows of
another pipeline or input layout are left out, and the rest are ordered by prediction time
(then event id), so the frame, and its sha256, do not depend on how partitions interleaved
on the way in. The latest rows by prediction time are the held-out tail: a model is
measured on what came after what it learned from, as it would serve.

The sha256 is of a canonical byte encoding, stable across reads, machines and versions of
this code that keep ``FRAME_FORMAT``::

    b"streamscore-labelled-frame/1\\n" + JSON {"columns": [...], "rows": n} + b"\\n"
    + per row: u32 length (LE) + the event id in UTF-8
    + prediction times, float64 LE + labels, float64 LE + the matrix, float32 LE row-major

>>> frame = StreamFrame(("x",), ["b", "a"], np.array([2.0, 1.0]), np.array([1.0, 0.0]),
...                     np.array([[0.5], [0.25]], dtype=np.float32))
>>> tail_rows(frame.rows, 0.2)
1
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import orjson

from streams.learning.labelled import LabelledBatch

FRAME_FORMAT = b"streamscore-labelled-frame/1\n"
_ID_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class StreamFrame:
    """Labelled served vectors, one row per event, in prediction-time order."""

    columns: tuple[str, ...]
    event_ids: list[str]
    predicted_at: npt.NDArray[np.float64]
    labels: npt.NDArray[np.float64]
    matrix: npt.NDArray[np.float32]

    @property
    def rows(self) -> int:
        return len(self.event_ids)

    def sha256(self) -> str:
        """Of the canonical encoding (module docstring)."""
        digest = hashlib.sha256(FRAME_FORMAT)
        digest.update(orjson.dumps({"columns": list(self.columns), "rows": self.rows}))
        digest.update(b"\n")
        for event_id in self.event_ids:
            raw = event_id.encode()
            digest.update(_ID_LENGTH.pack(len(raw)))
            digest.update(raw)
        digest.update(np.ascontiguousarray(self.predicted_at, dtype="<f8").tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype="<f8").tobytes())
        digest.update(np.ascontiguousarray(self.matrix, dtype="<f4").tobytes())
        return digest.hexdigest()


@dataclass
class FrameSources:
    """What a frame was built from: offsets read per partition, and what was left out."""

    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)
    duplicate_rows: int = 0
    skipped_rows: int = 0
    unreadable_records: int = 0

    def read(self, partition: int, offset: int) -> None:
        first, last = self.offsets.get(partition, (offset, offset))
        self.offsets[partition] = (min(first, offset), max(last, offset))


@dataclass(frozen=True)
class LabelledRecord:
    """One record of the labelled topic as read: where it was, and its batch (None when
    it could not be decoded)."""

    partition: int
    offset: int
    batch: LabelledBatch | None


def build_frame(
    records: Iterable[LabelledRecord], pipeline: str, columns: tuple[str, ...]
) -> tuple[StreamFrame, FrameSources]:
    """The frame of ``records`` (in offset order per partition) for ``pipeline`` with the
    input ``columns``, and its sources."""
    sources = FrameSources()
    seen: set[str] = set()
    ids: list[str] = []
    times: list[npt.NDArray[np.float64]] = []
    labels: list[npt.NDArray[np.float64]] = []
    vectors: list[npt.NDArray[np.float32]] = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        sources.read(record.partition, record.offset)
        batch = record.batch
        if batch is None:
            sources.unreadable_records += 1
            continue
        if batch.pipeline != pipeline or batch.columns != columns:
            sources.skipped_rows += batch.rows
            continue
        keep = []
        for i, event_id in enumerate(batch.event_ids):
            if event_id in seen:
                sources.duplicate_rows += 1
                continue
            seen.add(event_id)
            keep.append(i)
            ids.append(event_id)
        taken = np.asarray(keep, dtype=np.int64)
        times.append(batch.predicted_at[taken])
        labels.append(batch.labels[taken])
        vectors.append(batch.matrix[taken])
    width = len(columns)
    predicted_at = np.concatenate(times) if times else np.zeros(0)
    # By prediction time, then event id: independent of the partitions' interleaving.
    order = np.lexsort((np.asarray(ids), predicted_at)) if ids else np.zeros(0, int)
    frame = StreamFrame(
        columns=columns,
        event_ids=[ids[i] for i in order],
        predicted_at=predicted_at[order],
        labels=(np.concatenate(labels) if labels else np.zeros(0))[order],
        matrix=(np.concatenate(vectors) if vectors else np.zeros((0, width), np.float32))[order],
    )
    return frame, sources


def tail_rows(rows: int, fraction: float) -> int:
    """Rows in the held-out tail: ``fraction`` of them, at least one."""
    return max(1, round(rows * fraction))


def iso_utc(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")
