"""Drift per window: PSI against the training reference, gauges, monitoring records."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import rel_entr

from models.profile import ProfileBins, ReferenceProfile, build_profile, column_groups
from streams.metrics import Metrics
from streams.monitoring.drift import EPSILON, DriftMonitor, level, psi
from streams.spec import PipelineSpec, load_spec_text
from tests.unit.test_shadow_follow import Publisher

SPEC_TEXT = """
name: drifty
input: {topic: events}
event:
  id_field: id
  fields:
    id: {type: string}
    user: {type: string}
    amount: {type: float, min: 0}
    kind: {type: category, values: [a, b, c]}
    flag: {type: bool, required: false, default: false}
entity: {field: user, join_key: user_id}
features:
  repo: repo
  refs: ["stats:spend", "stats:visits"]
  defaults: {"stats:spend": 0.0, "stats:visits": 0.0}
model_input:
  - {event: amount}
  - {event: kind, encode: one_hot}
  - {event: flag}
  - {feature: "stats:spend"}
  - {feature: "stats:visits"}
model: {name: drifty_lr}
output: {topic: scores, dead_letter_topic: dlq}
MONITORING
"""
COLUMNS = ["amount", "kind", "flag", "stats__spend", "stats__visits"]


def make_spec(monitoring: str = "") -> PipelineSpec:
    return load_spec_text(SPEC_TEXT.replace("MONITORING", monitoring), base_dir=Path("/tmp"))


def draw(n: int, rng: np.random.Generator, amount_scale: float = 1.0) -> np.ndarray:
    """Rows of the spec's model input; ``amount_scale`` shifts the amount column only."""
    matrix = np.zeros((n, 7), dtype=np.float32)
    matrix[:, 0] = rng.gamma(2.0, 40.0, n) * amount_scale
    matrix[np.arange(n), 1 + rng.choice(3, n, p=[0.5, 0.3, 0.2])] = 1
    matrix[:, 4] = rng.random(n) < 0.2
    matrix[:, 5] = rng.normal(400, 80, n)
    matrix[:, 6] = rng.poisson(5, n)
    return matrix


def scores_of(matrix: np.ndarray) -> np.ndarray:
    """A stand-in model: a fixed function of the row, so scores drift with the inputs."""
    return 1 / (1 + np.exp(-(matrix[:, 0].astype(np.float64) - 80) / 40))


def reference(spec: PipelineSpec, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    train, hold = draw(20_000, rng), draw(5_000, rng)
    return build_profile(spec.input_columns(), column_groups(spec), train, scores_of(hold))


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return reference(make_spec())


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def monitor(
    profile: ReferenceProfile, monitoring: str = "", clock: Clock | None = None
) -> tuple[DriftMonitor, Metrics]:
    metrics = Metrics()
    drift = DriftMonitor(make_spec(monitoring), metrics, clock=clock or Clock())
    drift.use("drifty_lr", 1, profile)
    return drift, metrics


def feed(drift: DriftMonitor, matrix: np.ndarray, batch: int = 256, version: int = 1) -> list:
    records = []
    for start in range(0, len(matrix), batch):
        part = matrix[start : start + batch]
        records += drift.observe("drifty_lr", version, part, scores_of(part))
    return records


def gauge(metrics: Metrics, column: str) -> float | None:
    labels = {"pipeline": "drifty", "model": "drifty_lr"}
    if column == "score":
        return metrics.registry.get_sample_value("streamscore_drift_score_psi", labels)
    return metrics.registry.get_sample_value("streamscore_drift_psi", {**labels, "column": column})


# --- the PSI itself -------------------------------------------------------------------------


def direct_psi(expected: np.ndarray, counts: np.ndarray) -> float:
    """PSI as the symmetric KL divergence of the floored shares (scipy's rel_entr)."""
    a = np.maximum(counts / counts.sum(), EPSILON)
    e = np.maximum(expected, EPSILON)
    return float(np.sum(rel_entr(a, e) + rel_entr(e, a)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 10_000)), min_size=1, max_size=6))
def test_psi_equals_the_direct_formula_for_every_segment(
    shapes: list[tuple[int, int]],
) -> None:
    rng = np.random.default_rng(sum(b * 31 + s for b, s in shapes))
    references, counts, segments, start = [], [], [], 0
    for bins, seed in shapes:
        shares = rng.dirichlet(np.ones(bins))
        shares[rng.random(bins) < 0.2] = 0  # empty reference bins happen (a bool column)
        references.append(shares / shares.sum() if shares.sum() else np.full(bins, 1 / bins))
        counts.append(rng.multinomial(1 + seed, rng.dirichlet(np.ones(bins))))
        segments.append((start, start + bins))
        start += bins
    got = psi(np.concatenate(references), np.concatenate(counts), segments)
    expected = [direct_psi(r, c) for r, c in zip(references, counts, strict=True)]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_identical_distributions_have_zero_psi_and_levels_follow_the_thresholds() -> None:
    shares = np.array([0.25, 0.25, 0.5])
    assert psi(shares, np.array([25, 25, 50]), [(0, 3)]).tolist() == [0.0]
    assert [level(v, 0.1, 0.25) for v in (0.05, 0.1, 0.25, 0.26)] == [
        "ok", "warn", "warn", "alert"
    ]  # fmt: skip


# --- windows --------------------------------------------------------------------------------


def test_a_shifted_column_rises_above_the_alert_threshold_and_the_others_stay_below(
    profile: ReferenceProfile,
) -> None:
    """The issue's "done when": controlled data, amount x3, everything else as trained."""
    drift, metrics = monitor(profile, "monitoring: {window: {events: 5000}}")
    rng = np.random.default_rng(7)
    feed(drift, draw(5000, rng))
    assert all(gauge(metrics, c) < 0.1 for c in [*COLUMNS, "score"])  # same distribution

    records = feed(drift, draw(5000, rng, amount_scale=3.0))
    assert len(records) == 1
    assert gauge(metrics, "amount") > 0.25
    assert gauge(metrics, "score") > 0.25  # the score depends on amount
    assert all(gauge(metrics, c) < 0.1 for c in COLUMNS if c != "amount")
    record = orjson.loads(records[0].value)
    assert record["columns"]["amount"]["level"] == "alert"
    assert {c: v["level"] for c, v in record["columns"].items() if c != "amount"} == {
        c: "ok" for c in COLUMNS if c != "amount"
    }


def test_windows_close_at_the_configured_number_of_events(profile: ReferenceProfile) -> None:
    drift, metrics = monitor(profile, "monitoring: {window: {events: 1000}}")
    rng = np.random.default_rng(1)
    records = feed(drift, draw(999, rng), batch=333)
    assert records == [] and gauge(metrics, "amount") is None  # nothing closed yet
    # One batch of 1002: the first event fills the window, 1000 more fill the next one.
    records = feed(drift, draw(1002, rng), batch=1002)
    assert [orjson.loads(r.value)["events"] for r in records] == [1000, 1000]
    windows = metrics.registry.get_sample_value(
        "streamscore_drift_windows_total", {"pipeline": "drifty", "model": "drifty_lr"}
    )
    assert windows == 2
    assert feed(drift, draw(998, rng), batch=500) == []  # 1 + 998 counted
    assert len(feed(drift, draw(1, rng))) == 1


def test_a_time_window_closes_with_the_first_batch_after_its_span(
    profile: ReferenceProfile,
) -> None:
    clock = Clock()
    drift, _ = monitor(profile, "monitoring: {window: {seconds: 60}}", clock)
    rng = np.random.default_rng(2)
    assert feed(drift, draw(500, rng)) == []
    clock.now += 59.9
    assert feed(drift, draw(100, rng)) == []
    clock.now += 0.1
    (record,) = feed(drift, draw(100, rng))
    value = orjson.loads(record.value)
    assert value["events"] == 600  # the closing batch opens the next window
    assert value["window_start"] == "2023-11-14T22:13:20.000000Z"
    assert value["window_end"] == "2023-11-14T22:14:19.900000Z"


def test_the_monitoring_record_describes_the_window(profile: ReferenceProfile) -> None:
    drift, _ = monitor(profile, "monitoring: {window: {events: 500}, drift: {warn: 0.05}}")
    (record,) = feed(drift, draw(500, np.random.default_rng(3)), batch=500)
    assert record.topic == "drifty-monitoring" and record.key == b"drifty"
    value = orjson.loads(record.value)
    assert value["kind"] == "drift"
    assert (value["pipeline"], value["model"], value["model_version"]) == ("drifty", "drifty_lr", 1)
    assert value["thresholds"] == {"warn": 0.05, "alert": 0.25}
    assert list(value["columns"]) == COLUMNS
    kind = value["columns"]["kind"]
    assert kind["edges"] == ["(none)", "a", "b", "c"] and len(kind["shares"]) == 4
    assert sum(kind["shares"]) == pytest.approx(1)
    for described in [*value["columns"].values(), value["score"]]:
        assert set(described) == {"psi", "level", "edges", "reference", "shares"}
        assert len(described["reference"]) == len(described["shares"])
    assert value["score"]["reference"] == pytest.approx(profile.score.shares, abs=1e-6)


def test_a_spec_topic_replaces_the_default() -> None:
    spec = make_spec("monitoring: {topic: drift-records}")
    assert spec.monitoring_topic == "drift-records"
    assert make_spec().monitoring_topic == "drifty-monitoring"
    assert make_spec().monitoring.window.events == 10_000


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        ("{window: {events: 10, seconds: 5}}", "exactly one of 'events' or 'seconds'"),
        ("{window: {events: 0}}", "monitoring.window.events"),
        ("{drift: {warn: 0.3, alert: 0.2}}", "warn 0.3 is above alert 0.2"),
        ("{drift: {alarm: 0.3}}", "monitoring.drift.alarm"),
    ],
)
def test_an_invalid_monitoring_section_names_the_field(monitoring: str, message: str) -> None:
    from streams.errors import SpecError

    with pytest.raises(SpecError, match=message):
        make_spec(f"monitoring: {monitoring}")


# --- versions -------------------------------------------------------------------------------


def test_a_version_without_a_profile_exports_no_psi_and_says_so_once(
    profile: ReferenceProfile, caplog: pytest.LogCaptureFixture
) -> None:
    drift, metrics = monitor(profile, "monitoring: {window: {events: 300}}")
    drift.use("drifty_lr", 2, None)
    rng = np.random.default_rng(4)
    feed(drift, draw(300, rng), batch=300)
    assert gauge(metrics, "amount") is not None
    available = {"pipeline": "drifty", "model": "drifty_lr"}
    sample = metrics.registry.get_sample_value
    assert sample("streamscore_drift_reference_available", available) == 1
    with caplog.at_level(logging.INFO):
        assert feed(drift, draw(1000, rng), version=2) == []
    assert gauge(metrics, "amount") is None and gauge(metrics, "score") is None
    assert sample("streamscore_drift_reference_available", available) == 0
    said = [r.getMessage() for r in caplog.records if "no training reference" in r.getMessage()]
    assert len(said) == 1 and "drifty_lr v2" in said[0]


def test_a_new_primary_version_starts_a_new_window(profile: ReferenceProfile) -> None:
    drift, _ = monitor(profile, "monitoring: {window: {events: 300}}")
    drift.use("drifty_lr", 2, reference(make_spec(), seed=1))
    rng = np.random.default_rng(5)
    assert feed(drift, draw(200, rng)) == []
    (record,) = feed(drift, draw(300, rng), version=2)  # the 200 of v1 are dropped
    assert orjson.loads(record.value)["model_version"] == 2


def test_a_profile_that_does_not_fit_the_spec_is_not_used(
    profile: ReferenceProfile, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    other = make_spec().model_copy(update={"model_input": make_spec().model_input[:1]})
    drift = DriftMonitor(other, metrics)
    with caplog.at_level(logging.WARNING):
        drift.use("drifty_lr", 1, profile)
    assert "does not fit the spec's model input" in caplog.text
    assert (
        drift.observe("drifty_lr", 1, draw(10, np.random.default_rng(0))[:, :1], np.zeros(10)) == []
    )


def test_counting_bins_the_whole_batch_at_once(profile: ReferenceProfile) -> None:
    """A batch counted whole equals the sum of its rows counted one by one."""
    bins = ProfileBins(profile, make_spec().input_columns())
    matrix = draw(64, np.random.default_rng(6))
    scores = scores_of(matrix)
    whole = bins.count(matrix, scores)
    rows = sum(bins.count(matrix[i : i + 1], scores[i : i + 1]) for i in range(64))
    assert whole.tolist() == rows.tolist()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 300))
def test_binning_equals_searchsorted_on_each_column(
    profile: ReferenceProfile, seed: int, rows: int
) -> None:
    """Every numeric value lands in bin = the number of its column's edges <= it, values
    equal to an edge included."""
    bins = ProfileBins(profile, make_spec().input_columns())
    rng = np.random.default_rng(seed)
    matrix = draw(rows, rng)
    numeric = [c for c in profile.columns if c.kind == "numeric"]
    index = {name: i for i, name in enumerate(make_spec().input_columns())}
    for column in numeric:  # a quarter of the values sit exactly on an edge
        on_edge = rng.random(rows) < 0.25
        matrix[on_edge, index[column.columns[0]]] = rng.choice(column.edges, on_edge.sum())
    counts = bins.count(matrix, np.empty(0))
    starts = dict(zip([c.name for c in profile.columns], bins.segments, strict=False))
    for column in numeric:
        values = matrix[:, index[column.columns[0]]].astype(np.float64)
        expected = np.bincount(
            np.searchsorted(column.edges, values, side="right"), minlength=len(column.shares)
        )
        start, end = starts[column.name]
        assert counts[start:end].tolist() == expected.tolist()


def test_the_records_are_the_same_however_the_stream_is_batched(
    profile: ReferenceProfile,
) -> None:
    """Rows are held and binned a thousand at a time: windows, counts and PSI must not
    depend on where the batches were cut."""
    matrix = draw(5_321, np.random.default_rng(8))
    outcomes = []
    for batch in (1, 7, 333, 2_500):
        drift, _ = monitor(profile, "monitoring: {window: {events: 1000}}")
        records = feed(drift, matrix, batch=batch)
        outcomes.append([orjson.loads(r.value) for r in records])
    assert len(outcomes[0]) == 5
    assert all(outcome == outcomes[0] for outcome in outcomes[1:])


def test_rows_held_when_the_primary_changes_are_dropped_with_its_window(
    profile: ReferenceProfile,
) -> None:
    drift, _ = monitor(profile, "monitoring: {window: {events: 100}}")
    drift.use("drifty_lr", 2, profile)
    rng = np.random.default_rng(9)
    assert feed(drift, draw(60, rng), batch=20) == []  # held, not yet binned
    shifted = draw(100, rng, amount_scale=5.0)
    (record,) = feed(drift, shifted, batch=50, version=2)
    # Only version 2's rows: the shifted amounts, none of version 1's.
    value = orjson.loads(record.value)
    assert value["model_version"] == 2 and value["events"] == 100
    alone, _ = monitor(profile, "monitoring: {window: {events: 100}}")
    alone.use("drifty_lr", 2, profile)
    (expected,) = feed(alone, shifted, batch=100, version=2)
    assert value["columns"] == orjson.loads(expected.value)["columns"]


# --- in the scoring service -----------------------------------------------------------------


async def test_the_service_publishes_a_closed_windows_record_with_its_batch() -> None:
    from streams.scoring.pipeline import ScoringPipeline
    from streams.scoring.service import ScoringService
    from tests.unit.test_pipeline import SPEC, InMemoryFeatures, message

    spec = SPEC.model_copy(
        update={"monitoring": make_spec("monitoring: {window: {events: 4}}").monitoring}
    )

    class Scorer:
        name, version = "unit_lr", 3

        def score(self, matrix: np.ndarray) -> np.ndarray:
            return np.full(len(matrix), 0.5)

    rng = np.random.default_rng(0)
    train = np.zeros((100, 4), dtype=np.float32)
    train[:, 0] = rng.uniform(0, 1000, 100)
    train[np.arange(100), 1 + rng.integers(0, 2, 100)] = 1
    train[:, 3] = rng.uniform(0, 500, 100)
    profile = build_profile(spec.input_columns(), column_groups(spec), train, rng.random(50))
    metrics = Metrics()
    drift = DriftMonitor(spec, metrics)
    drift.use("unit_lr", 3, profile)
    pipeline = ScoringPipeline(spec, InMemoryFeatures(), Scorer(), metrics)
    publisher = Publisher()
    service = ScoringService(pipeline, publisher, metrics, drift=drift)
    events = [{"id": f"e{i}", "user": "u1", "amount": 5, "kind": "a"} for i in range(6)]
    await service.handle([message(i, e) for i, e in enumerate(events[:3])])
    assert [r.topic for r in publisher.records] == ["scores"] * 3
    await service.handle([message(i, e) for i, e in enumerate(events[3:], start=3)])
    topics = [r.topic for r in publisher.records]
    assert topics == ["scores"] * 6 + ["unit-monitoring"]
    record = orjson.loads(publisher.records[-1].value)
    assert record["events"] == 4 and record["model_version"] == 3
    assert record["columns"]["amount"]["level"] == "alert"  # every amount is 5: one bin
    stage = {"pipeline": "unit", "stage": "drift"}
    count = metrics.registry.get_sample_value("streamscore_stage_duration_seconds_count", stage)
    assert count == 2
