"""The online/offline skew check without servers: which columns are compared and how, the
sample, and a checker that never holds up (or fails) the label pipeline. A real worker and
Feast's offline store: tests/integration/test_skew.py."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from rich.console import Console

from streams.cli.skew import summary, tables
from streams.errors import SpecError
from streams.learning.join import Label, joined_record
from streams.learning.skew_check import SkewChecker
from streams.metrics import Metrics
from streams.monitoring.skew import SkewColumns, SkewReport, SkewResult, compare, sampled
from streams.scoring.prediction_store import decode_record, encode_record
from streams.spec import PipelineSpec, load_spec_text

SPEC_TEXT = """
name: skewed
input: {topic: events}
event:
  id_field: id
  fields:
    id: {type: string}
    user: {type: string}
    amount: {type: float}
    kind: {type: category, values: [a, b]}
entity: {field: user, join_key: user_id}
features:
  repo: repo
  refs: ["s:f", "s:g", "s:unused"]
  defaults: {"s:f": 0.0, "s:g": 5.0, "s:unused": 0.0}
model_input:
  - {event: kind, encode: one_hot}
  - feature: "s:g"
  - event: amount
  - feature: "s:f"
model: {name: m}
labels: {topic: labels}
output: {topic: scores, dead_letter_topic: dlq}
"""
EXTRA = "monitoring: {skew: {sample_rate: 1.0}}\n"


def spec_of(extra: str = EXTRA) -> PipelineSpec:
    return load_spec_text(SPEC_TEXT + extra, base_dir=Path("/tmp"))


SPEC = spec_of()
# Model input columns: kind=a, kind=b, s__g, amount, s__f. Offline reads: s:f, s:g, s:unused.


def test_only_model_input_columns_that_are_feature_refs_are_compared() -> None:
    layout = SkewColumns.of(SPEC)
    assert SPEC.input_columns() == ["kind=a", "kind=b", "s__g", "amount", "s__f"]
    assert layout.names == ("s__g", "s__f")  # model input order; 's:unused' is not an input
    assert layout.columns.tolist() == [2, 4]
    assert layout.ref_index.tolist() == [1, 0]
    assert layout.defaults.tolist() == [5.0, 0.0]


def check(served: list[list[float]], offline: list[list[float]], tolerance: float = 1e-6):
    n = len(served)
    return compare(
        SkewColumns.of(SPEC),
        np.array(served, dtype=np.float32),
        np.array(offline, dtype=np.float64),
        tolerance,
        [f"e{i}" for i in range(n)],
        [f"u{i}" for i in range(n)],
        [1_700_000_000.0 + i for i in range(n)],
    )


def test_one_feature_off_is_reported_for_that_feature_only() -> None:
    served = [[1, 0, 3.0, 10.0, 0.1], [0, 1, 4.0, 20.0, 0.2], [1, 0, 7.5, 30.0, 0.3]]
    # s:f matches everywhere (a float64 0.1 is the float32 the vector kept); s:g is off by
    # 2.5 on the last row; s:unused differs wildly and is not compared.
    offline = [[0.1, 3.0, 99.0], [0.2, 4.0, -1.0], [0.3, 5.0, 1e9]]
    result = check(served, offline)
    assert result.checked == 3
    assert dict(zip(result.features, result.mismatched.tolist(), strict=True)) == {
        "s__g": 1,
        "s__f": 0,
    }
    assert result.max_abs_difference.tolist() == [2.5, 0.0]
    assert [(e["event_id"], e["feature"], e["online"], e["offline"]) for e in result.examples] == [
        ("e2", "s__g", 7.5, 5.0)
    ]
    assert result.examples[0]["entity_key"] == "u2" and result.examples[0]["difference"] == 2.5
    orjson.dumps(result.examples)  # JSON as it is recorded


def test_event_columns_and_one_hot_groups_never_count_as_skew() -> None:
    same = [[0.1, 3.0, 0.0]]
    assert check([[1, 0, 3.0, 10.0, 0.1]], same).mismatched.sum() == 0
    assert check([[0, 1, 3.0, -55.0, 0.1]], same).mismatched.sum() == 0


def test_the_tolerance_is_relative_and_absolute_below_one() -> None:
    assert check([[1, 0, 1000.0, 0, 0.0]], [[0.0, 1000.0004, 0]]).mismatched.tolist() == [0, 0]
    assert check([[1, 0, 1000.0, 0, 0.0]], [[0.0, 1000.01, 0]]).mismatched.tolist() == [1, 0]
    assert check([[1, 0, 5.0, 0, 0.0]], [[2e-3, 5.0, 0]], tolerance=1e-3).mismatched[1] == 1
    assert check([[1, 0, 5.0, 0, 0.0]], [[5e-4, 5.0, 0]], tolerance=1e-3).mismatched[1] == 0


def test_an_offline_value_feast_lacks_is_the_default_as_training_fills_it() -> None:
    result = check([[1, 0, 5.0, 0, 0.0], [1, 0, 6.0, 0, 1.0]], [[np.nan, np.nan, 0]] * 2)
    assert result.mismatched.tolist() == [1, 1]  # row 0 served the defaults: no skew
    assert [(e["event_id"], e["feature"], e["offline_defaulted"]) for e in result.examples] == [
        ("e1", "s__g", True),
        ("e1", "s__f", True),
    ]


def test_the_sample_is_a_stable_share_of_event_ids() -> None:
    ids = [f"event-{i}" for i in range(20_000)]
    chosen = [i for i in ids if sampled(i, 0.05)]
    assert 800 < len(chosen) < 1200
    assert chosen == [i for i in ids if sampled(i, 0.05)]  # the same ones every time
    assert set(chosen) <= {i for i in ids if sampled(i, 0.2)}  # a larger rate adds to it
    assert not any(sampled(i, 0.0) for i in ids[:1000])
    assert all(sampled(i, 1.0) for i in ids[:1000])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("monitoring: {skew: {sample_rate: 1.5}}", "monitoring.skew.sample_rate"),
        ("monitoring: {skew: {sample_rate: -0.1}}", "monitoring.skew.sample_rate"),
        ("monitoring: {skew: {sample_rate: 0.1, tolerance: -1}}", "monitoring.skew.tolerance"),
        ("monitoring: {skew: {sample_rate: 0.1, max_in_flight: 0}}", "max_in_flight"),
        (
            "monitoring: {skew: {sample_rate: 0.1}}\nprivacy: {hash: [user]}",
            "entity.field 'user' is in privacy.hash/drop",
        ),
    ],
)
def test_the_spec_refuses_a_wrong_skew_section(extra: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle.replace(".", r"\.").replace("/", "/")):
        spec_of(extra)


def test_the_check_needs_labels() -> None:
    text = SPEC_TEXT.replace("labels: {topic: labels}\n", "") + EXTRA
    with pytest.raises(SpecError, match="declare 'labels'"):
        load_spec_text(text, base_dir=Path("/tmp"))
    assert not load_spec_text(SPEC_TEXT, base_dir=Path("/tmp")).monitoring.skew.enabled


def test_the_prediction_store_keeps_entity_key_and_time_only_when_asked() -> None:
    vector = np.array([1.0, 2.0], dtype=np.float32)
    plain = decode_record("e", encode_record(1.0, "m", 3, 0.5, vector))
    assert (plain.entity_key, plain.event_time) == (None, None)
    kept = decode_record("e", encode_record(1.0, "m", 3, 0.5, vector, 42, 1_700_000_000.25))
    assert (kept.entity_key, kept.event_time) == (42, 1_700_000_000.25)
    assert kept.vector.tolist() == [1.0, 2.0] and kept.scores == {"m": 0.5}


# --- the checker ------------------------------------------------------------------------


class Reader:
    """Feast's offline store stand-in: values by entity key; can block or fail."""

    def __init__(self, values: dict[str, list[float]]) -> None:
        self.values = values
        self.release = threading.Event()
        self.release.set()
        self.fail: Exception | None = None
        self.calls = 0

    def read(self, keys, times):
        self.calls += 1
        assert self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        return np.array([self.values[k] for k in keys], dtype=np.float64)


class Record:
    def __init__(self) -> None:
        self.results: list[SkewResult] = []

    async def record(self, result: SkewResult, at: float) -> None:
        self.results.append(result)


def joined(event_id: str, user: str | None, vector: list[float]) -> dict[str, Any]:
    label = Label(event_id, 1, 0.0)
    served = np.array(vector, dtype=np.float32)
    time = None if user is None else 1_700_000_000.0
    return joined_record(label, 0.0, False, served, {"m": 0.5}, entity_key=user, event_time=time)


OFFLINE = {"u1": [0.1, 3.0, 0.0], "u2": [0.2, 4.0, 0.0]}
RIGHT = {"u1": [1, 0, 3.0, 9.0, 0.1], "u2": [0, 1, 4.0, 9.0, 0.2]}


class Clock:
    now = 1_000.0

    def __call__(self) -> float:
        return self.now


def checker(spec: PipelineSpec = SPEC, reader: Reader | None = None):
    metrics = Metrics()
    record = Record()
    clock = Clock()
    made = SkewChecker(spec, reader or Reader(OFFLINE), record, metrics, clock=clock)  # type: ignore[arg-type]
    return made, metrics, record, clock


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"pipeline": SPEC.name, **labels})


def test_a_checked_batch_sets_the_metrics_of_each_feature() -> None:
    skew, metrics, record, _ = checker()
    wrong = [0, 1, 4.0, 9.0, 0.7]  # u2's s:f served 0.7, offline 0.2

    async def run() -> None:
        skew.offer([joined("e1", "u1", RIGHT["u1"]), joined("e2", "u2", wrong)])
        await skew.close(5)

    asyncio.run(run())
    assert value(metrics, "streamscore_skew_checked_total") == 2
    mismatched = "streamscore_skew_mismatched_total"
    assert value(metrics, mismatched, feature="s__f") == 1
    assert value(metrics, mismatched, feature="s__g") == 0
    largest = "streamscore_skew_max_abs_difference"
    assert value(metrics, largest, feature="s__f") == pytest.approx(0.5, abs=1e-6)
    assert value(metrics, largest, feature="s__g") == 0
    assert [e["event_id"] for e in record.results[0].examples] == ["e2"]


def test_the_largest_difference_covers_the_window_then_goes_back_to_zero() -> None:
    skew, metrics, _, clock = checker()
    largest = "streamscore_skew_max_abs_difference"

    async def offer(rows: list[dict[str, Any]]) -> None:
        skew.offer(rows)
        await skew.close(5)

    asyncio.run(offer([joined("e1", "u1", [1, 0, 3.0, 9.0, 2.1])]))  # s:f off by 2
    clock.now += 100
    asyncio.run(offer([joined("e2", "u2", RIGHT["u2"])]))  # a match, within the window
    assert value(metrics, largest, feature="s__f") == pytest.approx(2.0)
    clock.now += SPEC.monitoring.skew.window_seconds
    asyncio.run(offer([joined("e3", "u2", RIGHT["u2"])]))  # the first check left the window
    assert value(metrics, largest, feature="s__f") == 0


def test_a_failed_lookup_is_counted_and_logged_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = Reader(OFFLINE)
    reader.fail = RuntimeError("offline store down")
    skew, metrics, record, _ = checker(reader=reader)

    async def run() -> None:
        skew.offer([joined("e1", "u1", RIGHT["u1"]), joined("e2", "u2", RIGHT["u2"])])
        await skew.close(5)

    asyncio.run(run())
    assert value(metrics, "streamscore_skew_unchecked_total", reason="failed") == 2
    assert value(metrics, "streamscore_skew_checked_total") == 0
    assert record.results == []
    assert "2 sampled predictions not checked: offline store down" in caplog.text


def test_offer_never_waits_and_skips_a_sample_while_checks_are_pending() -> None:
    reader = Reader(OFFLINE)
    reader.release.clear()  # the offline read hangs until released
    spec = spec_of("monitoring: {skew: {sample_rate: 1.0, max_in_flight: 1}}\n")
    skew, metrics, record, _ = checker(spec, reader)

    async def run() -> None:
        skew.offer([joined("e1", "u1", RIGHT["u1"])])
        skew.offer([joined("e2", "u2", RIGHT["u2"]), joined("e3", "u1", RIGHT["u1"])])
        assert skew.pending == 1  # offer returned with the first read still hanging
        reader.release.set()
        await skew.close(5)

    asyncio.run(run())
    assert value(metrics, "streamscore_skew_unchecked_total", reason="busy") == 2
    assert value(metrics, "streamscore_skew_checked_total") == 1
    assert reader.calls == 1 and len(record.results) == 1


def test_only_the_sample_is_checked_and_unkeyed_predictions_are_counted() -> None:
    spec = spec_of("monitoring: {skew: {sample_rate: 0.5}}\n")
    reader = Reader({f"u{i}": [0.1, 3.0, 0.0] for i in range(200)})
    skew, metrics, record, _ = checker(spec, reader)
    rows = [joined(f"e{i}", f"u{i}", [1, 0, 3.0, 9.0, 0.1]) for i in range(200)]
    rows.append(joined("scored-with-the-check-off", None, RIGHT["u1"]))
    expected = sum(sampled(r["event_id"], 0.5) for r in rows[:-1])
    unkeyed = int(sampled(rows[-1]["event_id"], 0.5))

    async def run() -> None:
        skew.offer(rows)
        await skew.close(5)

    asyncio.run(run())
    assert 70 < expected < 130
    assert value(metrics, "streamscore_skew_checked_total") == expected
    assert value(metrics, "streamscore_skew_unchecked_total", reason="no_key") == unkeyed
    assert reader.calls == 1  # one offline read for the batch's sample


# --- the record and the report ------------------------------------------------------------


def test_the_report_reads_what_the_log_wrote_and_skips_anything_else() -> None:
    totals = {
        b"checked": b"40",
        b"first_at": b"1700000000.0",
        b"last_at": b"1700000060.5",
        b"mismatched:s__f": b"3",
        b"max:s__f": b"2.5",
        b"mismatched:s__g": b"0",
        b"max:s__g": b"0.0",
    }
    example = {
        "event_id": "e9",
        "entity_key": "u1",
        "event_time": 1_700_000_001.0,
        "feature": "s__f",
        "online": 7.5,
        "offline": 5.0,
        "offline_defaulted": False,
        "difference": 2.5,
    }
    recent = [orjson.dumps(example), b"not json", b"[1, 2]", b'{"feature": 3}']
    report = SkewReport.parse(totals, recent, SkewColumns.of(SPEC).names)
    assert report.checked == 40
    assert [(f.feature, f.mismatched, f.max_abs_difference) for f in report.features] == [
        ("s__g", 0, 0.0),
        ("s__f", 3, 2.5),
    ]
    assert report.examples == [example]
    assert summary(SPEC, report) == (
        "online/offline skew of skewed: 40 predictions checked from 2023-11-14T22:13:20+00:00"
        " to 2023-11-14T22:14:20+00:00 (sample rate 1, tolerance 1e-06)"
    )
    console = Console(width=200, record=True)
    for table in tables(SPEC, report):
        console.print(table)
    text = console.export_text()
    assert "7.50%" in text and "e9" in text
    assert "2023-11-14T22:13:21+00:00" in text


def test_an_empty_report_lists_every_compared_feature() -> None:
    report = SkewReport.parse({}, [], SkewColumns.of(SPEC).names)
    assert report.checked == 0
    assert [(f.feature, f.mismatched) for f in report.features] == [("s__g", 0), ("s__f", 0)]
