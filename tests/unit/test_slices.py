"""monitoring.slices: what the spec accepts, what the prediction store keeps, and that a
slice's degradation (scores shifted, labels flipped) shows in that slice value only."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from models.evaluation import EvaluationStateError
from models.profile import ReferenceProfile
from streams.errors import SpecError
from streams.learning.slice_evaluation import SlicedEvaluation
from streams.metrics import Metrics
from streams.monitoring.drift import DriftMonitor
from streams.monitoring.slices import MIN_SLICE_EVENTS, SliceDrift, SliceLayout
from streams.scoring.prediction_store import decode_record, encode_record
from tests.unit.test_drift import SPEC_TEXT, draw, make_spec, reference, scores_of

KINDS = ("a", "b", "c")  # the test spec's category field 'kind' (p = 0.5, 0.3, 0.2)


# --- the spec -------------------------------------------------------------------------------


def test_category_and_bool_fields_are_slices() -> None:
    spec = make_spec("monitoring: {slices: [kind, flag]}")
    assert spec.monitoring.slices == ("kind", "flag")
    layout = SliceLayout.of(spec)
    assert layout is not None
    assert [f.labels for f in layout.fields] == [
        ("a", "b", "c", "(none)"),
        ("false", "true", "(none)"),
    ]
    assert SliceLayout.of(make_spec()) is None  # off unless configured


@pytest.mark.parametrize(
    ("slices", "message"),
    [
        ("[amount]", "'amount' has type 'float'; expected one of ['category', 'bool']"),
        ("[user]", "'user' has type 'string'; expected one of ['category', 'bool']"),
        ("[nope]", "monitoring.slices 'nope' is not a field of event.fields"),
        ("[kind, kind]", "monitoring.slices: 'kind' is listed twice"),
    ],
)
def test_a_slice_that_is_not_a_declared_category_or_bool_field_is_refused(
    slices: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_spec(f"monitoring: {{slices: {slices}}}")


def wide_spec(categories: int, extra: str = ""):
    values = ", ".join(f"v{i}" for i in range(categories))
    text = SPEC_TEXT.replace(
        "    flag:", f"    shop: {{type: category, values: [{values}]}}\n    flag:"
    ).replace("MONITORING", "monitoring: {slices: [shop]}\n" + extra)
    from pathlib import Path

    from streams.spec import load_spec_text

    return load_spec_text(text, base_dir=Path("/tmp"))


def test_a_high_cardinality_category_is_refused_with_its_count() -> None:
    assert wide_spec(20).monitoring.slices == ("shop",)  # the bound itself is accepted
    with pytest.raises(SpecError, match="'shop' declares 21 categories, more than 20"):
        wide_spec(21)


def test_a_field_withheld_by_privacy_is_not_a_slice() -> None:
    with pytest.raises(SpecError, match="'shop' is listed in privacy"):
        wide_spec(3, "privacy: {drop: [shop]}")


# --- the prediction store -------------------------------------------------------------------


def test_a_record_round_trips_with_and_without_slice_values() -> None:
    vector = np.arange(4, dtype=np.float32)
    with_slices = decode_record("e1", encode_record(2.5, "m", 3, 0.75, vector, slices=["b", True]))
    assert with_slices.slices == ("b", True)
    assert (with_slices.primary, with_slices.primary_version) == ("m", 3)
    assert with_slices.scores == {"m": 0.75} and with_slices.vector.tolist() == [0, 1, 2, 3]
    absent = decode_record("e1", encode_record(2.5, "m", 3, 0.75, vector, slices=["c", None]))
    assert absent.slices == ("c", None)
    without = decode_record("e1", encode_record(2.5, "m", 3, 0.75, vector))
    assert without.slices is None and without.vector.tolist() == [0, 1, 2, 3]


def test_a_record_stored_before_slices_still_decodes() -> None:
    # The exact bytes the store wrote before slice values existed.
    header = orjson.dumps({"t": 2.5, "m": "m", "v": 3, "s": 0.75})
    old = struct.pack("<I", len(header)) + header + np.ones(2, np.float32).tobytes()
    record = decode_record("e1", old)
    assert record.slices is None and record.scores == {"m": 0.75}
    assert record.vector.tolist() == [1.0, 1.0]


def test_slice_values_that_are_not_categories_or_bools_are_ignored() -> None:
    header = orjson.dumps({"t": 2.5, "m": "m", "v": 3, "s": 0.75, "x": [{"a": 1}]})
    record = decode_record("e1", struct.pack("<I", len(header)) + header)
    assert record.slices is None


def test_stored_values_the_spec_does_not_declare_are_labelled_none() -> None:
    layout = SliceLayout.of(make_spec("monitoring: {slices: [kind, flag]}"))
    assert layout is not None
    assert layout.labelled(("b", False)) == [("kind", "b"), ("flag", "false")]
    # 1 is not the bool True, and 'z' is no category: never a label of their own.
    assert layout.labelled(("z", 1)) == [("kind", "(none)"), ("flag", "(none)")]
    assert layout.labelled(("b",)) == []  # another spec's slices: none
    assert layout.labelled(None) == []


def test_codes_read_from_the_model_input_equal_those_read_from_the_events() -> None:
    """kind (a one-hot group) and flag (a bool input) are read from the matrix scored."""
    from models.inputs import InputLayout

    spec = make_spec("monitoring: {slices: [kind, flag]}")
    layout = SliceLayout.of(spec)
    assert layout is not None and set(layout.from_matrix) == {0, 1}
    rng = np.random.default_rng(9)
    events = [
        {"amount": 1.0, "kind": KINDS[k], "flag": bool(f)}
        for k, f in zip(rng.integers(0, 3, 300).tolist(), rng.random(300) < 0.3, strict=True)
    ]
    matrix = InputLayout(spec).build(events, np.zeros((300, 2)))
    assert layout.codes(events, matrix).tolist() == layout.codes(events).tolist()
    assert layout.stored(layout.codes(events, matrix)) == [[e["kind"], e["flag"]] for e in events]


# --- drift per slice ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return reference(make_spec())


WINDOW = 10_000


def sliced_monitor(profile: ReferenceProfile) -> tuple[DriftMonitor, Metrics, SliceLayout]:
    spec = make_spec(f"monitoring: {{window: {{events: {WINDOW}}}, slices: [kind, flag]}}")
    metrics = Metrics()
    drift = DriftMonitor(spec, metrics)
    drift.use("drifty_lr", 1, profile)
    layout = SliceLayout.of(spec)
    assert layout is not None
    return drift, metrics, layout


def events_of(matrix: np.ndarray) -> list[dict]:
    """The events a matrix of the test spec was built from (kind and flag)."""
    kinds = np.argmax(matrix[:, 1:4], axis=1)
    return [
        {"kind": KINDS[k], "flag": bool(f)}
        for k, f in zip(kinds.tolist(), matrix[:, 4].tolist(), strict=True)
    ]


def feed_window(
    drift: DriftMonitor, layout: SliceLayout, seed: int, shift_kind: str | None = None
) -> list:
    """One window of events; with ``shift_kind``, that kind's amounts (so its scores) x3."""
    matrix = draw(WINDOW, np.random.default_rng(seed))
    events = events_of(matrix)
    if shift_kind is not None:
        matrix[np.array([e["kind"] == shift_kind for e in events]), 0] *= 3
    records = []
    for start in range(0, WINDOW, 500):
        part = matrix[start : start + 500]
        codes = layout.codes(events[start : start + 500])
        records += drift.observe("drifty_lr", 1, part, scores_of(part), codes)
    return records


def slice_gauges(metrics: Metrics) -> dict[tuple[str, str], float | None]:
    labels = {"pipeline": "drifty", "model": "drifty_lr"}
    return {
        (field, value): metrics.registry.get_sample_value(
            "streamscore_slice_score_psi", {**labels, "slice": field, "value": value}
        )
        for field, values in (("kind", KINDS), ("flag", ("false", "true")))
        for value in values
    }


def test_shifted_scores_of_one_slice_value_raise_its_psi_only(profile: ReferenceProfile) -> None:
    drift, metrics, layout = sliced_monitor(profile)
    [first] = feed_window(drift, layout, seed=1)
    before = slice_gauges(metrics)
    [second] = feed_window(drift, layout, seed=2, shift_kind="b")
    after = slice_gauges(metrics)

    assert all(v is not None and v < 0.05 for v in before.values()), before
    assert after[("kind", "b")] > 0.25 > 0.1 > max(after[("kind", "a")], after[("kind", "c")])
    # kind=a and kind=c stay put; the overall score moves less than the shifted slice.
    for kind in ("a", "c"):
        assert abs(after[("kind", kind)] - before[("kind", kind)]) < 0.02, (before, after)
    record = orjson.loads(second.value)
    assert record["score"]["psi"] < after[("kind", "b")]
    sliced = record["slices"]["kind"]["b"]
    assert sliced["level"] == "alert" and sliced["psi"] == pytest.approx(after[("kind", "b")])
    assert sum(v["events"] for v in record["slices"]["kind"].values()) == WINDOW
    assert len(sliced["shares"]) == len(profile.score.shares)
    assert "(none)" not in record["slices"]["kind"]  # no event lacked it: not in the record
    assert orjson.loads(first.value)["slices"]["kind"]["b"]["level"] == "ok"


def test_a_slice_value_too_rare_in_a_window_has_no_psi(profile: ReferenceProfile) -> None:
    drift, metrics, layout = sliced_monitor(profile)
    matrix = draw(WINDOW, np.random.default_rng(3))
    events = events_of(matrix)
    rare = [i for i, e in enumerate(events) if e["kind"] == "c"][MIN_SLICE_EVENTS - 1 :]
    keep = np.setdiff1d(np.arange(WINDOW), rare)  # kind=c: one event short of the minimum
    extra = draw(len(rare), np.random.default_rng(4))
    extra[:, 1:4] = [1, 0, 0]  # topped up with kind=a, so the window still closes
    matrix = np.concatenate([matrix[keep], extra])
    events = events_of(matrix)
    records = drift.observe("drifty_lr", 1, matrix, scores_of(matrix), layout.codes(events))
    record = orjson.loads(records[0].value)
    assert record["slices"]["kind"]["c"] == {
        "events": MIN_SLICE_EVENTS - 1, "psi": None, "level": None,
        "shares": record["slices"]["kind"]["c"]["shares"],
    }  # fmt: skip
    gauges = slice_gauges(metrics)
    assert gauges[("kind", "c")] is None and gauges[("kind", "a")] is not None


def test_without_slices_the_record_and_metrics_are_unchanged(profile: ReferenceProfile) -> None:
    metrics = Metrics()
    drift = DriftMonitor(make_spec("monitoring: {window: {events: 1000}}"), metrics)
    drift.use("drifty_lr", 1, profile)
    matrix = draw(1000, np.random.default_rng(5))
    [record] = drift.observe("drifty_lr", 1, matrix, scores_of(matrix))
    assert "slices" not in orjson.loads(record.value)
    assert not [m for m in metrics.registry.collect() if m.name.startswith("streamscore_slice")][
        0
    ].samples


def test_counting_per_slice_equals_counting_each_value_apart(profile: ReferenceProfile) -> None:
    _, _, layout = sliced_monitor(profile)
    sliced = SliceDrift(layout, profile.score.edges)
    matrix = draw(1000, np.random.default_rng(6))
    events = events_of(matrix)
    scores = scores_of(matrix)
    counts = sliced.count(scores, layout.codes(events))
    edges = np.asarray(profile.score.edges)
    for row, (field, value) in enumerate(sliced.rows):
        if value == "(none)":
            assert counts[row].sum() == 0
            continue
        mask = np.array([str(e[field]).lower() == value for e in events])
        expected = np.bincount(
            np.searchsorted(edges, scores[mask], side="right"), minlength=len(edges) + 1
        )
        assert counts[row].tolist() == expected.tolist(), (field, value)


# --- label metrics per slice ----------------------------------------------------------------


def test_flipped_labels_of_one_slice_value_lower_its_accuracy_only() -> None:
    layout = SliceLayout.of(make_spec("monitoring: {slices: [kind, flag]}"))
    assert layout is not None
    rng = np.random.default_rng(7)
    n = 6000
    kinds = rng.choice(KINDS, n, p=[0.5, 0.3, 0.2]).tolist()
    flags = (rng.random(n) < 0.3).tolist()
    labels = (rng.random(n) < 0.4).astype(int)
    scores = np.clip(labels * 0.6 + rng.random(n) * 0.4, 0, 1)  # accuracy 1.0 at 0.5
    clean, flipped = SlicedEvaluation(layout), SlicedEvaluation(layout)
    for i in range(n):
        values = (kinds[i], flags[i])
        truth = int(labels[i])
        for evaluation in clean.of(values):
            evaluation.update("m", float(scores[i]), truth)
        wrong = 1 - truth if kinds[i] == "b" else truth  # kind=b's labels flipped
        for evaluation in flipped.of(values):
            evaluation.update("m", float(scores[i]), wrong)
    before, after = clean.snapshot(), flipped.snapshot()
    assert after[("kind", "b")]["m"]["accuracy"] == 0.0
    assert before[("kind", "b")]["m"]["accuracy"] == 1.0
    for kind in ("a", "c"):
        assert after[("kind", kind)]["m"] == before[("kind", kind)]["m"]
    # The flag slices mix kinds: both degrade, by kind=b's share of their window.
    assert 0.5 < after[("flag", "true")]["m"]["accuracy"] < 0.9
    figures = {(f, v, metric): x for _, f, v, metric, x in flipped.metrics()}
    assert figures[("kind", "b", "accuracy")] == 0.0 and ("kind", "b", "count") not in figures


def test_slice_evaluations_checkpoint_as_json_and_resume_exactly() -> None:
    layout = SliceLayout.of(make_spec("monitoring: {slices: [kind, flag]}"))
    assert layout is not None
    sliced = SlicedEvaluation(layout)
    rng = np.random.default_rng(8)
    for i in range(1500):
        for evaluation in sliced.of((KINDS[i % 3], bool(i % 2))):
            evaluation.update("m", float(rng.random()), int(rng.random() < 0.5))
    replace, flat = sliced.touched()
    assert replace and len(flat) == 2 * 5  # a fresh start writes every value it has
    stored = dict(zip(flat[::2], flat[1::2], strict=True))
    restored = SlicedEvaluation.restore(stored, layout)
    assert restored.snapshot() == sliced.snapshot()
    assert restored.touched() == (False, [])  # restored as stored: nothing to rewrite
    for evaluation, again in zip(sliced.of(("a", True)), restored.of(("a", True)), strict=True):
        evaluation.update("m", 0.9, 1)
        again.update("m", 0.9, 1)
    assert restored.snapshot() == sliced.snapshot()
    # The next checkpoint rewrites only the two values the event touched.
    replace, flat = sliced.touched()
    assert not replace and flat[::2] == [b'["flag","true"]', b'["kind","a"]']
    stored.update(zip(flat[::2], flat[1::2], strict=True))
    assert SlicedEvaluation.restore(stored, layout).snapshot() == sliced.snapshot()
    # A spec that no longer declares a value: its evaluation is left out, not an error, and
    # the next checkpoint replaces the stored hash.
    narrow = SliceLayout.of(make_spec("monitoring: {slices: [flag]}"))
    assert narrow is not None
    narrowed = SlicedEvaluation.restore(stored, narrow)
    assert set(narrowed.snapshot()) == {("flag", "false"), ("flag", "true")}
    assert narrowed.touched()[0] is True
    with pytest.raises(EvaluationStateError, match="a pickle, never loaded"):
        SlicedEvaluation.restore({b'["kind","a"]': b"\x80\x04K\x01."}, layout)
    with pytest.raises(EvaluationStateError, match="not \\[slice, value\\]"):
        SlicedEvaluation.restore({b'{"kind": 1}': flat[1]}, layout)
    with pytest.raises(EvaluationStateError, match="task"):
        SlicedEvaluation.restore(stored, layout, task="regression")
