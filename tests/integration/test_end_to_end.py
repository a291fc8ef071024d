"""End to end on the embedded broker and Redis: events in -> predictions / dead letters out.

One worker process runs per pipeline (module-scoped), fed with valid events, events for
unknown entities and every kind of bad input; the tests then check what came out against
Feast and ONNX Runtime directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from features.store import open_store
from models.inputs import InputLayout
from models.registry import ModelRegistry
from streams.cli.generators import make_generator
from streams.runtime.connections import RedisConnection
from streams.scoring.records import decode_original_value
from streams.settings import Settings
from streams.spec import PipelineSpec, feature_column
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    start_worker,
)

pytestmark = pytest.mark.integration

TIMEOUT = 120.0


@dataclass
class Run:
    prepared: PreparedPipeline
    spec: PipelineSpec
    valid: list[dict[str, Any]]
    bad: dict[bytes, tuple[bytes, str]]  # key -> (value, expected reason)
    unknown_keys: set[Any]
    predictions: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    exit_code: int
    log: str


def bad_inputs(spec: PipelineSpec, sample: dict[str, Any]) -> dict[bytes, tuple[bytes, str]]:
    """One message per kind of bad input, keyed by a unique message key."""
    fields = spec.event.fields
    number = next(n for n, f in fields.items() if f.type in ("int", "float") and f.max is not None)
    category = next(n for n, f in fields.items() if f.type == "category")
    entity = spec.entity.field
    return {
        b"bad-not-json": (b"{this is not json", "not_json"),
        b"bad-array": (b"[1, 2, 3]", "not_an_object"),
        b"bad-missing": (
            orjson.dumps({k: v for k, v in sample.items() if k != entity}),
            "missing_field",
        ),
        b"bad-type": (orjson.dumps({**sample, number: "twelve"}), "wrong_type"),
        b"bad-range": (
            orjson.dumps({**sample, number: (fields[number].max or 0) + 1}),
            "out_of_range",
        ),
        b"bad-category": (
            orjson.dumps({**sample, category: "no-such-category"}),
            "unknown_category",
        ),
    }


def run_pipeline(prepared: PreparedPipeline, n_valid: int, unknown: list[Any]) -> Run:
    spec_path, spec = prepared.variant(uuid.uuid4().hex[:8])
    settings = prepared.settings
    generator = make_generator(spec, seed=11)
    now = datetime.now(UTC)
    valid = [generator.next_event(now) for _ in range(n_valid)]
    for i, key in enumerate(unknown):  # entities the online store has never seen
        valid[i * 7][spec.entity.field] = key
    bad = bad_inputs(spec, valid[-1])
    id_field = spec.event.id_field
    messages = [(str(e[id_field]).encode(), orjson.dumps(e)) for e in valid]
    for i, (key, (value, _)) in enumerate(bad.items()):  # spread bad input between good
        messages.insert(i * (len(messages) // len(bad)), (key, value))

    asyncio.run(create_topics(settings, spec))
    asyncio.run(produce(settings.kafka_bootstrap_servers, spec.input.topic, messages))
    worker = start_worker(prepared, spec_path, spec.name)
    try:
        out = asyncio.run(
            consume(
                settings.kafka_bootstrap_servers,
                [spec.output.topic, spec.output.dead_letter_topic],
                count=len(messages),
                timeout=TIMEOUT,
                worker=worker,
            )
        )
    finally:
        exit_code = worker.stop()
    return Run(
        prepared=prepared,
        spec=spec,
        valid=valid,
        bad=bad,
        unknown_keys=set(unknown),
        predictions=[orjson.loads(r.value) for r in out.get(spec.output.topic, [])],
        dead_letters=[orjson.loads(r.value) for r in out.get(spec.output.dead_letter_topic, [])],
        exit_code=exit_code,
        log=worker.log_tail(40),
    )


@pytest.fixture(scope="module")
def card_run(card_fraud: PreparedPipeline) -> Run:
    return run_pipeline(card_fraud, n_valid=600, unknown=["card-never-seen-1", "card-never-seen-2"])


@pytest.fixture(scope="module")
def eta_run(delivery_eta: PreparedPipeline) -> Run:
    return run_pipeline(delivery_eta, n_valid=200, unknown=[10_001])


@pytest.fixture(scope="module")
def tansu_card_run(card_fraud: PreparedPipeline, tansu_settings: Settings) -> Run:
    """The same pipeline on the embedded Tansu broker (the Python-only fallback)."""
    return run_pipeline(
        dataclasses.replace(card_fraud, settings=tansu_settings),
        n_valid=300,
        unknown=["card-never-seen-3"],
    )


@pytest.fixture(params=["card_run", "eta_run"])
def run(request: pytest.FixtureRequest) -> Run:
    return request.getfixturevalue(request.param)


@pytest.mark.tansu
def test_on_tansu_every_input_ends_as_one_prediction_or_one_dead_letter(
    tansu_card_run: Run,
) -> None:
    run = tansu_card_run
    id_field = run.spec.event.id_field
    predicted = [p["event_id"] for p in run.predictions]
    assert sorted(predicted) == sorted(str(e[id_field]) for e in run.valid), run.log
    assert sorted(d["reason"] for d in run.dead_letters) == sorted(r for _, r in run.bad.values())
    assert run.exit_code == 0, run.log


def test_every_input_ends_as_one_prediction_or_one_dead_letter(run: Run) -> None:
    id_field = run.spec.event.id_field
    predicted = [p["event_id"] for p in run.predictions]
    assert sorted(predicted) == sorted(str(e[id_field]) for e in run.valid), run.log
    assert len(run.dead_letters) == len(run.bad), run.log
    assert run.exit_code == 0, run.log  # SIGTERM is a clean shutdown


def test_scores_equal_a_direct_onnx_run_on_the_same_vector(run: Run) -> None:
    spec = run.spec
    model = ModelRegistry(run.prepared.settings.model_dir).resolve(
        spec.model.name, spec.model.version
    )
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    events = {str(e[spec.event.id_field]): e for e in run.valid}
    ordered = [events[p["event_id"]] for p in run.predictions]
    features = np.array(
        [
            [p["features"][feature_column(ref)] for ref in spec.features.refs]
            for p in run.predictions
        ]
    )
    matrix = InputLayout(spec).build(ordered, features)
    outputs = dict(
        zip(
            [o.name for o in session.get_outputs()],
            session.run(None, {"input": matrix}),
            strict=True,
        )
    )
    expected = (
        outputs["probabilities"][:, 1]
        if "probabilities" in outputs
        else outputs["variable"].ravel()
    )
    scores = np.array([p["score"] for p in run.predictions])
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)
    assert {p["model"] for p in run.predictions} == {model.name}
    assert {p["model_version"] for p in run.predictions} == {model.version}


def test_features_equal_feast_online_features(run: Run) -> None:
    spec = run.spec
    store = open_store(spec.features.repo, RedisConnection.from_settings(run.prepared.settings))
    keys = sorted({p["entity_key"] for p in run.predictions}, key=str)
    online = store.get_online_features(
        features=list(spec.features.refs),
        entity_rows=[{spec.entity.join_key: k} for k in keys],
        full_feature_names=True,
    ).to_dict()
    by_key = {k: i for i, k in enumerate(online[spec.entity.join_key])}
    for prediction in run.predictions:
        row = by_key[prediction["entity_key"]]
        for ref in spec.features.refs:
            column = feature_column(ref)
            feast_value = online[column][row]
            if feast_value is None:
                assert prediction["features"][column] == spec.features.defaults[ref]
                assert column in prediction["defaulted_features"]
            else:
                assert prediction["features"][column] == pytest.approx(feast_value, rel=1e-6)


def test_records_carry_the_age_of_each_views_row_at_event_time(run: Run) -> None:
    spec = run.spec
    store = open_store(spec.features.repo, RedisConnection.from_settings(run.prepared.settings))
    keys = sorted({p["entity_key"] for p in run.predictions}, key=str)
    response = store.get_online_features(
        features=list(spec.features.refs),
        entity_rows=[{spec.entity.join_key: k} for k in keys],
        full_feature_names=True,
    ).proto
    names = list(response.metadata.feature_names.val)
    for view in spec.features.views:
        first = next(r for r in spec.features.refs if r.startswith(f"{view}:"))
        stamps = response.results[names.index(feature_column(first))].event_timestamps
        row_time = {k: t.seconds + t.nanos * 1e-9 for k, t in zip(keys, stamps, strict=True)}
        for prediction in run.predictions:
            age = prediction["feature_age_seconds"][view]
            if not prediction["entity_found"]:
                assert age is None
                continue
            event_time = datetime.fromisoformat(prediction["event_time"]).timestamp()
            assert age == pytest.approx(event_time - row_time[prediction["entity_key"]], abs=2e-3)
    assert all("stale_views" not in p for p in run.predictions)  # no max_age_seconds


def test_unknown_entities_are_scored_with_defaults_and_flagged(run: Run) -> None:
    spec = run.spec
    flagged = [p for p in run.predictions if p["entity_key"] in run.unknown_keys]
    assert flagged, "the unknown entities were not scored"
    defaults = {feature_column(ref): value for ref, value in spec.features.defaults.items()}
    for prediction in flagged:
        assert prediction["entity_found"] is False
        assert prediction["features_defaulted"] is True
        assert prediction["features"] == defaults
        assert sorted(prediction["defaulted_features"]) == sorted(defaults)
    known = [p for p in run.predictions if p["entity_key"] not in run.unknown_keys]
    assert sum(p["entity_found"] for p in known) > 0.9 * len(known)


def test_bad_inputs_are_dead_lettered_with_reason_and_original_bytes(run: Run) -> None:
    by_value = {decode_original_value(d): d for d in run.dead_letters}
    for _key, (value, reason) in run.bad.items():
        letter = by_value[value]
        assert letter["stage"] == "decode"
        assert letter["reason"] == reason, letter["error"]
        assert letter["pipeline"] == run.spec.name
        assert letter["source"]["topic"] == run.spec.input.topic
        assert letter["error"]
    sources = {(d["source"]["partition"], d["source"]["offset"]) for d in run.dead_letters}
    assert len(sources) == len(run.bad)


def test_decisions_follow_the_threshold(card_run: Run) -> None:
    threshold = card_run.spec.model.threshold
    assert threshold is not None
    for prediction in card_run.predictions:
        assert prediction["decision"] == (prediction["score"] >= threshold)


def test_regression_pipeline_has_no_decision(eta_run: Run) -> None:
    assert all("decision" not in p for p in eta_run.predictions)
    assert all(isinstance(p["entity_key"], int) for p in eta_run.predictions)
