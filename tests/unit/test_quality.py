"""Data quality per model input column and window: missing, at the declared bounds, unknown
categories; gauges, monitoring records, the shared window, the scoring service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from streams.errors import BadInput, SpecError
from streams.metrics import Metrics
from streams.monitoring.quality import QualityMonitor
from streams.monitoring.spec import WindowSpec
from streams.monitoring.window import OpenWindow, Windows
from streams.scoring.validation import Event, EventValidator, optional_bits
from streams.spec import PipelineSpec, load_spec_text
from tests.unit.test_shadow_follow import Publisher

SPEC_TEXT = """
name: qual
input: {topic: events}
event:
  id_field: id
  fields:
    id: {type: string}
    user: {type: string}
    amount: {type: float, min: 0, max: 500}
    count: {type: int, min: 1, max: 10}
    kind: {type: category, values: [a, b, c]}
    flag: {type: bool, required: false, default: false}
    note: {type: category, values: [x, y], required: false, default: x}
entity: {field: user, join_key: user_id}
features:
  repo: repo
  refs: ["stats:spend", "stats:visits"]
  defaults: {"stats:spend": 0.0, "stats:visits": 0.0}
model_input:
  - {event: amount}
  - {event: count}
  - {event: kind, encode: one_hot}
  - {event: flag}
  - {event: note, encode: one_hot}
  - {feature: "stats:spend"}
  - {feature: "stats:visits"}
model: {name: qual_lr}
output: {topic: scores, dead_letter_topic: dlq}
MONITORING
"""
COLUMNS = ["amount", "count", "kind", "flag", "note", "stats__spend", "stats__visits"]
# model input matrix columns: amount, count, kind=a, kind=b, kind=c, flag, note=x, note=y,
# stats__spend, stats__visits
WIDTH = 10


def make_spec(monitoring: str = "monitoring: {window: {events: 1000}}") -> PipelineSpec:
    return load_spec_text(SPEC_TEXT.replace("MONITORING", monitoring), base_dir=Path("/tmp"))


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def draw(n: int, rng: np.random.Generator) -> np.ndarray:
    """Ordinary rows: no value at a bound, one category each."""
    matrix = np.zeros((n, WIDTH), dtype=np.float32)
    matrix[:, 0] = rng.uniform(1, 400, n)
    matrix[:, 1] = rng.integers(2, 10, n)  # 2..9: never at 1 or 10
    matrix[np.arange(n), 2 + rng.integers(0, 3, n)] = 1
    matrix[:, 5] = rng.random(n) < 0.3
    matrix[np.arange(n), 6 + rng.integers(0, 2, n)] = 1
    matrix[:, 8] = rng.normal(300, 50, n)
    matrix[:, 9] = rng.poisson(4, n)
    return matrix


def events(n: int, absent: dict[int, int] | None = None) -> list[Event]:
    """Scored events; ``absent`` maps a row to its absent-field bits."""
    absent = absent or {}
    return [Event(f"e{i}", "u", 0.0, {}, absent.get(i, 0)) for i in range(n)]


def monitor(spec: PipelineSpec | None = None, clock: Clock | None = None):
    metrics = Metrics()
    return QualityMonitor(spec or make_spec(), metrics, clock=clock or Clock()), metrics


def observe(quality: QualityMonitor, matrix, defaulted=None, absent=None, dead=0, unknown=()):
    n = len(matrix)
    if defaulted is None:
        defaulted = np.zeros((n, 2), dtype=bool)
    return quality.observe(matrix, defaulted, events(n, absent), dead, list(unknown))


def ratio(metrics: Metrics, column: str, check: str) -> float | None:
    labels = {"pipeline": "qual", "column": column, "check": check}
    return metrics.registry.get_sample_value("streamscore_data_quality_ratio", labels)


def ratios(metrics: Metrics, check: str) -> dict[str, float | None]:
    return {column: ratio(metrics, column, check) for column in COLUMNS}


# --- the checks on controlled matrices ------------------------------------------------------


def test_a_column_with_30_percent_defaulted_values_shows_0_3_and_the_others_0() -> None:
    quality, metrics = monitor()
    defaulted = np.zeros((1000, 2), dtype=bool)
    defaulted[np.random.default_rng(0).permutation(1000)[:300], 0] = True  # stats:spend
    (record,) = observe(quality, draw(1000, np.random.default_rng(1)), defaulted)
    assert ratios(metrics, "missing") == {
        "amount": 0.0, "count": 0.0, "kind": 0.0, "flag": 0.0, "note": 0.0,
        "stats__spend": 0.3, "stats__visits": 0.0,
    }  # fmt: skip
    value = orjson.loads(record.value)
    assert value["columns"]["stats__spend"] == {"missing": 0.3}
    assert value["columns"]["stats__visits"] == {"missing": 0.0}


def test_a_column_pinned_at_its_max_shows_1_at_max_and_the_others_0() -> None:
    quality, metrics = monitor()
    matrix = draw(1000, np.random.default_rng(2))
    matrix[:, 1] = 10  # count: a saturated sensor, every value at the declared max
    (record,) = observe(quality, matrix)
    assert ratio(metrics, "count", "at_max") == 1.0
    assert ratio(metrics, "count", "at_min") == 0.0
    assert ratio(metrics, "amount", "at_max") == 0.0 and ratio(metrics, "amount", "at_min") == 0.0
    assert orjson.loads(record.value)["columns"]["count"] == {
        "missing": 0.0, "at_min": 0.0, "at_max": 1.0
    }  # fmt: skip


def test_values_at_the_min_are_counted_as_the_model_sees_them() -> None:
    quality, metrics = monitor()
    matrix = draw(1000, np.random.default_rng(3))
    matrix[:250, 0] = 0.0  # amount's min
    matrix[250:260, 0] = 500.0  # amount's max
    matrix[260:270, 0] = np.float32(np.nextafter(np.float32(500), np.float32(0)))  # just under
    observe(quality, matrix)
    assert ratio(metrics, "amount", "at_min") == 0.25
    assert ratio(metrics, "amount", "at_max") == 0.01


def test_checks_exist_only_where_they_apply() -> None:
    quality, metrics = monitor()
    (record,) = observe(quality, draw(1000, np.random.default_rng(4)))
    columns = orjson.loads(record.value)["columns"]
    assert {name: sorted(checks) for name, checks in columns.items()} == {
        "amount": ["at_max", "at_min", "missing"],
        "count": ["at_max", "at_min", "missing"],
        "kind": ["missing", "unknown"],
        "flag": ["missing"],
        "note": ["missing", "unknown"],
        "stats__spend": ["missing"],
        "stats__visits": ["missing"],
    }
    assert ratio(metrics, "flag", "at_max") is None  # a bool has no bounds
    assert ratio(metrics, "stats__spend", "unknown") is None


def test_absent_optional_event_fields_are_missing() -> None:
    spec = make_spec()
    bits = optional_bits(spec.event)
    quality, metrics = monitor(spec)
    absent = {i: bits["flag"] for i in range(100)}  # 10% lack flag
    absent.update({i: bits["flag"] | bits["note"] for i in range(900, 950)})  # 5% lack both
    observe(quality, draw(1000, np.random.default_rng(5)), absent=absent)
    assert ratio(metrics, "flag", "missing") == 0.15
    assert ratio(metrics, "note", "missing") == 0.05
    assert ratio(metrics, "amount", "missing") == 0.0


def test_the_validator_marks_absent_and_null_optional_fields_only() -> None:
    spec = make_spec()
    bits = optional_bits(spec.event)
    validator = EventValidator(spec.event, spec.entity.field)
    base = {"id": "e", "user": "u", "amount": 3.0, "count": 2, "kind": "a"}

    def parse(**extra: object) -> Event:
        return validator.parse(orjson.dumps({**base, **extra}), fallback_time=0.0)

    assert parse(flag=True, note="y").absent == 0
    assert parse(note="y").absent == bits["flag"]
    lacking_both = parse(flag=None)
    assert lacking_both.absent == bits["flag"] | bits["note"]
    assert lacking_both.fields["flag"] is False and lacking_both.fields["note"] == "x"


def test_many_optional_fields_beyond_one_int64_word() -> None:
    extra = "\n".join(f"    o{i}: {{type: float, required: false, default: 0}}" for i in range(70))
    text = SPEC_TEXT.replace("MONITORING", "monitoring: {window: {events: 10}}").replace(
        "    flag:", f"{extra}\n    flag:"
    )
    spec = load_spec_text(
        text.replace("  - {event: flag}", "  - {event: o65}\n  - {event: flag}"),
        base_dir=Path("/tmp"),
    )
    bits = optional_bits(spec.event)
    assert bits["o65"] == 1 << 65 and bits["flag"] == 1 << 70
    quality, metrics = monitor(spec)
    matrix = np.zeros((10, WIDTH + 1), dtype=np.float32)
    matrix[:, 1] = 5
    absent = {0: bits["o65"], 1: bits["o65"] | bits["flag"], 2: bits["o3"]}
    quality.observe(matrix, np.zeros((10, 2), bool), events(10, absent), 0, [])
    labels = {"pipeline": "qual", "check": "missing"}
    sample = metrics.registry.get_sample_value
    assert sample("streamscore_data_quality_ratio", {**labels, "column": "o65"}) == 0.2
    assert sample("streamscore_data_quality_ratio", {**labels, "column": "flag"}) == 0.1


def test_unknown_categories_are_a_share_of_all_input_events() -> None:
    quality, metrics = monitor()
    matrix = draw(600, np.random.default_rng(6))
    # 1000 scored and 250 dead letters: 1250 input events, 100 refused for kind, 25 for note
    observe(quality, matrix, dead=250, unknown=["kind"] * 100 + ["note"] * 25)
    (record,) = observe(quality, draw(400, np.random.default_rng(7)))
    assert ratio(metrics, "kind", "unknown") == 0.08
    assert ratio(metrics, "note", "unknown") == 0.02
    value = orjson.loads(record.value)
    assert (value["events"], value["dead_letters"]) == (1000, 250)
    assert value["columns"]["kind"]["unknown"] == 0.08


def test_unknown_values_of_a_category_that_is_no_model_input_are_not_counted() -> None:
    quality, metrics = monitor(make_spec("monitoring: {window: {events: 10}}"))
    observe(quality, draw(10, np.random.default_rng(8)), dead=5, unknown=["elsewhere"] * 5)
    assert ratio(metrics, "kind", "unknown") == 0.0


def test_the_decode_stage_names_the_field_of_an_unknown_category() -> None:
    spec = make_spec()
    base = {"id": "e", "user": "u", "amount": 3.0, "count": 2, "kind": "zzz"}
    for withheld in (frozenset(), frozenset({"kind"})):
        validator = EventValidator(spec.event, spec.entity.field, withheld=withheld)
        with pytest.raises(BadInput) as caught:
            validator.parse(orjson.dumps(base), fallback_time=0.0)
        assert (caught.value.reason, caught.value.field) == ("unknown_category", "kind")
        assert ("zzz" in str(caught.value)) is not bool(withheld)


# --- windows --------------------------------------------------------------------------------


def test_a_batch_split_between_two_windows_counts_each_part_in_its_own() -> None:
    quality, metrics = monitor(make_spec("monitoring: {window: {events: 4}}"))
    matrix = draw(6, np.random.default_rng(9))
    matrix[:4, 1] = 10  # the first window's 4 rows at count's max, the next 2 not
    (first,) = observe(quality, matrix, dead=3, unknown=["kind"])
    assert orjson.loads(first.value)["columns"]["count"]["at_max"] == 1.0
    assert orjson.loads(first.value)["dead_letters"] == 3  # the batch's first window
    (second,) = observe(quality, draw(2, np.random.default_rng(10)))
    value = orjson.loads(second.value)
    assert value["columns"]["count"]["at_max"] == 0.0 and value["dead_letters"] == 0
    assert ratio(metrics, "count", "at_max") == 0.0
    windows = metrics.registry.get_sample_value(
        "streamscore_data_quality_windows_total", {"pipeline": "qual"}
    )
    assert windows == 2


def test_the_records_are_the_same_however_the_stream_is_batched() -> None:
    """Rows are held and counted a thousand at a time: windows and shares must not depend on
    where the batches were cut."""
    rng = np.random.default_rng(12)
    n = 3_210
    matrix = draw(n, rng)
    matrix[rng.random(n) < 0.1, 1] = 10  # some at count's max
    defaulted = rng.random((n, 2)) < 0.2
    absent = {int(i): int(rng.integers(1, 4)) for i in np.flatnonzero(rng.random(n) < 0.3)}
    outcomes = []
    for batch in (1, 9, 400, 3_000):
        quality, _ = monitor(make_spec("monitoring: {window: {events: 1000}}"))
        records = []
        for start in range(0, n, batch):
            rows = slice(start, start + batch)
            held = {i - start: bits for i, bits in absent.items() if start <= i < start + batch}
            records += observe(quality, matrix[rows], defaulted[rows], held)
        outcomes.append([orjson.loads(r.value)["columns"] for r in records])
    assert len(outcomes[0]) == 3
    assert outcomes[0][0]["flag"]["missing"] > 0 and outcomes[0][0]["count"]["at_max"] > 0
    assert all(outcome == outcomes[0] for outcome in outcomes[1:])


def test_a_time_window_closes_with_the_first_batch_after_its_span_even_of_dead_letters() -> None:
    clock = Clock()
    quality, _ = monitor(make_spec("monitoring: {window: {seconds: 60}}"), clock)
    assert observe(quality, draw(10, np.random.default_rng(11))) == []
    clock.now += 30
    assert quality.observe(None, None, [], 2, ["note", "note"]) == []
    clock.now += 30
    (record,) = quality.observe(None, None, [], 5, ["kind"])  # due: closes, then counted
    value = orjson.loads(record.value)
    assert (value["events"], value["dead_letters"]) == (10, 2)
    assert value["columns"]["note"]["unknown"] == pytest.approx(2 / 12, abs=1e-6)
    assert value["window_start"] == "2023-11-14T22:13:20.000000Z"
    assert value["window_end"] == "2023-11-14T22:13:20.000000Z"
    clock.now += 1
    observe(quality, draw(5, np.random.default_rng(12)))
    clock.now += 60
    (record,) = observe(quality, draw(1, np.random.default_rng(13)))
    value = orjson.loads(record.value)
    assert (value["events"], value["dead_letters"]) == (5, 5)
    assert value["columns"]["kind"]["unknown"] == 0.1


def test_the_shared_window_cuts_as_the_drift_monitor_always_did() -> None:
    windows, span = Windows(WindowSpec(events=1000)), OpenWindow()
    cuts = [(r.start, r.stop, c) for r, c in windows.split(span, 999, now=1.0)]
    assert cuts == [(0, 999, False)] and span.events == 999
    cuts = [(r.start, r.stop, c) for r, c in windows.split(span, 2002, now=2.0)]
    assert cuts == [(0, 1, True), (1, 1001, True), (1001, 2001, True), (2001, 2002, False)]
    assert (span.events, span.started, span.last) == (1, 2.0, 2.0)
    timed, span = Windows(WindowSpec(seconds=10)), OpenWindow()
    assert [c for _, c in timed.split(span, 5, now=0.0)] == [False]
    assert [(r.start, r.stop, c) for r, c in timed.split(span, 3, now=10.0)] == [
        (0, 0, True), (0, 3, False)
    ]  # fmt: skip
    assert (span.events, span.started) == (3, 10.0)


# --- the record and the spec ----------------------------------------------------------------


def test_the_quality_record_describes_the_window() -> None:
    quality, _ = monitor(make_spec("monitoring: {window: {events: 50}, topic: mon}"))
    (record,) = observe(quality, draw(50, np.random.default_rng(14)), dead=1)
    assert (record.topic, record.key) == ("mon", b"qual")
    value = orjson.loads(record.value)
    assert set(value) == {
        "kind", "pipeline", "window_start", "window_end", "events", "dead_letters", "columns"
    }  # fmt: skip
    assert (value["kind"], value["pipeline"], value["events"]) == ("quality", "qual", 50)
    assert list(value["columns"]) == COLUMNS


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        ("{volume: {drop: 1.5}}", "monitoring.volume.drop"),
        ("{volume: {spike: 0.8}}", "monitoring.volume.spike"),
        ("{volume: {dip: 0.3}}", "monitoring.volume.dip"),
        ("{quality: sometimes}", "monitoring.quality"),
    ],
)
def test_an_invalid_volume_or_quality_setting_names_the_field(
    monitoring: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        make_spec(f"monitoring: {monitoring}")


def test_quality_is_on_and_volume_has_defaults_unless_the_spec_says_otherwise() -> None:
    spec = make_spec("")
    assert spec.monitoring.quality is True
    assert (spec.monitoring.volume.drop, spec.monitoring.volume.spike) == (0.5, 2.0)
    assert make_spec("monitoring: {quality: false}").monitoring.quality is False


# --- in the scoring service -----------------------------------------------------------------


async def test_the_service_measures_what_reached_the_model_and_what_was_refused() -> None:
    from streams.scoring.pipeline import ScoringPipeline
    from streams.scoring.service import ScoringService
    from tests.unit.test_pipeline import SPEC, InMemoryFeatures, message

    spec = SPEC.model_copy(
        update={"monitoring": make_spec("monitoring: {window: {events: 4}}").monitoring}
    )

    class Scorer:
        name, version = "unit_lr", 1

        def score(self, matrix: np.ndarray) -> np.ndarray:
            return np.full(len(matrix), 0.5)

    metrics = Metrics()
    quality = QualityMonitor(spec, metrics)
    pipeline = ScoringPipeline(spec, InMemoryFeatures(), Scorer(), metrics)
    publisher = Publisher()
    service = ScoringService(pipeline, publisher, metrics, quality=quality)
    batch = [
        {"id": "e0", "user": "u1", "amount": 1000, "kind": "a"},  # amount at its max
        {"id": "e1", "user": "nobody", "amount": 5, "kind": "b"},  # features defaulted
        {"id": "e2", "user": "u2", "amount": 5, "kind": "zzz"},  # unknown category
        {"id": "e3", "user": "u1", "amount": 0, "kind": "a"},  # amount at its min
        {"id": "e4", "user": "u2", "amount": 7, "kind": "b"},
    ]
    await service.handle([message(i, e) for i, e in enumerate(batch)])
    assert [r.topic for r in publisher.records] == ["scores"] * 4 + ["dlq", "unit-monitoring"]
    value = orjson.loads(publisher.records[-1].value)
    assert (value["events"], value["dead_letters"]) == (4, 1)
    assert value["columns"] == {
        "amount": {"missing": 0.0, "at_min": 0.25, "at_max": 0.25},
        "kind": {"missing": 0.0, "unknown": 0.2},
        "stats__spend": {"missing": 0.25},
    }
    stage = {"pipeline": "unit", "stage": "quality"}
    count = metrics.registry.get_sample_value("streamscore_stage_duration_seconds_count", stage)
    assert count == 1
