"""The labelled log and ``train --from-stream`` without a broker: the record format, the
frame built from records (first row per event id, time order, offsets read), the sha256 of
its canonical bytes, and the challenger registered with its lineage."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from models.errors import TrainingError
from models.registry import CHALLENGER, CHAMPION, ModelRegistry
from models.scorer import OnnxScorer
from streams.cli.train_stream import train_challenger
from streams.learning.join import Label, joined_record
from streams.learning.labelled import (
    RECORD_BYTES,
    LabelledFormatError,
    LabelledLog,
    decode_batch,
    encode_batch,
)
from streams.learning.labelled_frame import LabelledRecord, StreamFrame, build_frame
from streams.settings import Settings
from streams.spec import LabelsSpec, PipelineSpec
from tests.planted import planted_pickle
from tests.unit.test_training import make_spec

T0 = 1_800_000_000.0


@pytest.fixture
def spec(tmp_path: Path) -> PipelineSpec:
    return make_spec(tmp_path, "classification").model_copy(
        update={"labels": LabelsSpec(topic="labels")}
    )


def joined(spec: PipelineSpec, n: int, seed: int = 0, start: int = 0) -> list[dict]:
    """``n`` joined labels whose label is learnable from the vector."""
    rng = np.random.default_rng(seed)
    width = len(spec.input_columns())
    vectors = rng.normal(size=(n, width)).astype(np.float32)
    labels = (vectors[:, 0] - vectors[:, 3] > 0).astype(int)
    return [
        joined_record(
            Label(f"ev-{start + i}", int(y), T0 + start + i + 5),
            T0 + start + i,
            False,
            v,
            {spec.model.name: 0.25, "shadow_a": 0.5} if i % 2 else {spec.model.name: 0.75},
            primary=spec.model.name,
            primary_version=3,
        )
        for i, (v, y) in enumerate(zip(vectors, labels, strict=True))
    ]


def records_of(spec: PipelineSpec, rows: list[dict], per: int, partition: int = 0) -> list:
    """``rows`` as labelled records of ``per`` rows, at offsets 0, 1, ..."""
    columns = spec.input_columns()
    chunks = [rows[i : i + per] for i in range(0, len(rows), per)]
    return [
        LabelledRecord(partition, k, decode_batch(encode_batch(spec.name, columns, chunk)))
        for k, chunk in enumerate(chunks)
    ]


def test_a_batch_round_trips_exactly(spec: PipelineSpec) -> None:
    rows = joined(spec, 5)
    batch = decode_batch(encode_batch(spec.name, spec.input_columns(), rows))
    assert batch.pipeline == spec.name and batch.columns == tuple(spec.input_columns())
    assert batch.event_ids == [r["event_id"] for r in rows]
    assert batch.matrix.dtype == np.float32
    assert batch.matrix.tobytes() == np.stack([r["vector"] for r in rows]).tobytes()
    assert batch.labels.tolist() == [r["label"] for r in rows]
    assert batch.predicted_at.tolist() == [r["predicted_at"] for r in rows]
    assert batch.primary_version == [3] * 5 and batch.primary == [spec.model.name] * 5
    # Every model the join found, null where a model published no score for the row.
    assert batch.scores == {
        spec.model.name: [0.75, 0.25, 0.75, 0.25, 0.75],
        "shadow_a": [None, 0.5, None, 0.5, None],
    }


@pytest.mark.parametrize(
    "value",
    [None, b"", b"SSLB", b"SSLB\x02\x00\x00\x00\x00", b"SSLB\x01\x04\x00\x00\x00{}[]"],
)
def test_anything_else_is_refused(value: bytes | None) -> None:
    with pytest.raises(LabelledFormatError):
        decode_batch(value)


def test_a_planted_pickle_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with pytest.raises(LabelledFormatError):
        decode_batch(planted_pickle(marker))
    assert not marker.exists()


def test_a_truncated_matrix_is_refused(spec: PipelineSpec) -> None:
    data = encode_batch(spec.name, spec.input_columns(), joined(spec, 3))
    with pytest.raises(LabelledFormatError, match="matrix bytes"):
        decode_batch(data[:-4])


async def test_a_large_batch_is_split_into_records_under_the_size_in_order(
    spec: PipelineSpec,
) -> None:
    sent: list = []

    class Publisher:
        async def publish(self, records: list) -> None:
            sent.extend(records)

    wide = spec.model_copy(update={"name": "wide"})
    log = LabelledLog(wide, "wide-labelled", Publisher())
    rows = joined(spec, 5000)
    await log.append(rows)
    assert len(sent) > 1
    assert all(len(r.value) <= RECORD_BYTES and r.key == b"wide" for r in sent)
    ids = [i for r in sent for i in decode_batch(r.value).event_ids]
    assert ids == [r["event_id"] for r in rows]


def test_the_frame_keeps_each_event_once_in_time_order_and_records_the_offsets(
    spec: PipelineSpec,
) -> None:
    rows = joined(spec, 40)
    later = list(reversed(rows[:20]))  # out of time order
    replayed = rows[10:20]  # a replayed batch: written twice
    other_layout = encode_batch(spec.name, ["a", "b"], [])  # no rows, wrong layout
    records = [
        *records_of(spec, later, per=8, partition=0),  # offsets 0..2
        *records_of(spec, rows[20:], per=10, partition=1),  # offsets 0..1
        LabelledRecord(1, 2, decode_batch(other_layout)),
        *[LabelledRecord(1, 3 + r.offset, r.batch) for r in records_of(spec, replayed, per=10)],
        LabelledRecord(1, 7, None),  # unreadable
    ]
    random.Random(0).shuffle(records)
    frame, sources = build_frame(records, spec.name, tuple(spec.input_columns()))
    assert frame.event_ids == [r["event_id"] for r in rows]
    assert frame.predicted_at.tolist() == sorted(frame.predicted_at.tolist())
    assert frame.matrix.tobytes() == np.stack([r["vector"] for r in rows]).tobytes()
    assert sources.offsets == {0: (0, 2), 1: (0, 7)}
    assert (sources.duplicate_rows, sources.unreadable_records) == (10, 1)


def test_the_frame_sha256_is_stable_and_changes_with_any_value(spec: PipelineSpec) -> None:
    rows = joined(spec, 30)
    columns = tuple(spec.input_columns())
    one, _ = build_frame(records_of(spec, rows, per=7), spec.name, columns)
    mixed = records_of(spec, rows[::2], per=4, partition=0) + records_of(
        spec, rows[1::2], per=5, partition=1
    )
    two, _ = build_frame(mixed, spec.name, columns)
    assert one.sha256() == two.sha256()
    flipped = [dict(r) for r in rows]
    flipped[4]["label"] = 1 - flipped[4]["label"]
    three, _ = build_frame(records_of(spec, flipped, per=7), spec.name, columns)
    assert three.sha256() != one.sha256()
    # The canonical bytes are a format: this digest only changes with FRAME_FORMAT.
    small = StreamFrame(
        ("x", "y"), ["b", "a"], np.array([2.0, 1.0]), np.array([1.0, 0.0]),
        np.array([[0.5, 1.0], [0.25, -1.0]], dtype=np.float32),
    )  # fmt: skip
    assert small.sha256() == "86ecc6018407d8ff75900cd355608f74d1d210d4ad93c4170717d3c422a4db47"


def test_train_from_stream_registers_a_challenger_with_its_lineage(
    spec: PipelineSpec, tmp_path: Path
) -> None:
    settings = Settings(model_dir=tmp_path / "registry")
    rows = joined(spec, 400)
    replay = [LabelledRecord(0, 7, r.batch) for r in records_of(spec, rows[:64], per=64)]
    records = records_of(spec, rows, per=64) + replay  # offsets 0..6, then a replay at 7
    done = train_challenger(spec, settings, records, since=T0 - 60)
    version = done.version
    registry = ModelRegistry(settings.model_dir)
    assert registry.aliases(spec.model.name) == {CHAMPION: 1, CHALLENGER: version.version}
    manifest = version.manifest
    lineage = manifest.lineage
    assert lineage is not None
    assert lineage.topic == f"{spec.name}-labelled" and lineage.offsets == {0: (0, 7)}
    assert (lineage.rows, lineage.train_rows, lineage.holdout_rows) == (400, 320, 80)
    assert lineage.duplicate_rows == 64
    assert lineage.sha256 == done.frame.sha256() == manifest.training_data.sha256
    assert lineage.holdout_from == "2027-01-15T08:05:20.000+00:00"  # T0 + 320 s
    assert lineage.since == "2027-01-15T07:59:00.000+00:00"
    assert lineage.metrics == manifest.metrics and manifest.metrics["roc_auc"] > 0.8
    assert manifest.training_data.path == f"kafka:{spec.name}-labelled"
    # What is registered scores the served layout.
    scorer = OnnxScorer.from_version(registry.resolve(spec.model.name, CHALLENGER))
    assert scorer.score(done.frame.matrix[:3]).shape == (3,)
    # The manifest round-trips (offsets' partition keys are JSON strings on disk).
    on_disk = orjson.loads((version.path / "manifest.json").read_bytes())
    assert on_disk["lineage"]["offsets"] == {"0": [0, 7]}


def test_too_few_rows_or_one_class_are_refused(spec: PipelineSpec, tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "registry")
    rows = joined(spec, 150)
    with pytest.raises(TrainingError, match=r"150 labelled rows .* at least 200 needed"):
        train_challenger(spec, settings, records_of(spec, rows, per=50))
    ones = [dict(r, label=1) for r in rows]
    with pytest.raises(TrainingError, match="one class only"):
        train_challenger(spec, settings, records_of(spec, ones, per=50), min_rows=100)
    assert not (tmp_path / "registry").exists() or not ModelRegistry(settings.model_dir).names()
