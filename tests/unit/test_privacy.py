"""The spec's privacy section: hashed and dropped event values never leave the pipeline as
they came in, in any record kind (predictions, shadow predictions, dead letters, joined
labels) nor in the prediction store, while features are still read with the real entity key
and labels still join. No broker, no Redis: in-memory stand-ins (the integration test
tests/integration/test_privacy.py greps a real worker's topics and Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import SecretStr

from streams.errors import PrivacyError, SpecError
from streams.learning.join import LabelJoiner
from streams.metrics import Metrics
from streams.runtime.processes import settings_env
from streams.scoring.pipeline import ScoringPipeline
from streams.scoring.prediction_store import StoredPrediction
from streams.scoring.privacy import NO_PRIVACY, Privacy
from streams.scoring.records import InputMessage, OutputRecord
from streams.scoring.service import ScoringService
from streams.settings import Settings, SettingsError, load_settings
from streams.shadows.shadow import ShadowRunner
from streams.spec import PipelineSpec, load_spec_text
from tests.unit.test_pipeline import CountingScorer, onnx_scorer  # noqa: F401 - a fixture

KEY = "unit-test-hash-key-0123456789"
BASE = """
name: private
input: {topic: events}
event:
  id_field: id
  fields:
    id: {type: string}
    user: {type: string}
    amount: {type: float, min: 0, max: 1000}
    kind: {type: category, values: [a, b]}
    email: {type: string, required: false}
entity: {field: user, join_key: user_id}
features:
  repo: repo
  refs: ["stats:spend", "stats:visits"]
  defaults: {"stats:spend": -1.0, "stats:visits": 0.0}
model_input:
  - {event: amount}
  - {event: kind, encode: one_hot}
  - {feature: "stats:spend"}
model: {name: unit_lr, threshold: 0.5}
labels: {topic: labels, window_seconds: 600}
output: {topic: scores, dead_letter_topic: dlq}
"""
NOW = 1_700_000_000.0
SECRET_USERS = ("secret-user-one", "secret-user-two")
FEATURES = {SECRET_USERS[0]: (10.0, 3.0), SECRET_USERS[1]: (500.0, 40.0)}


def spec_with(privacy: str) -> PipelineSpec:
    return load_spec_text(BASE + privacy, base_dir=Path("/tmp"))


def hashed(text: str) -> str:
    return hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()


class Rows:
    def __init__(self, values, defaulted, entity_found) -> None:
        self.values, self.defaulted, self.entity_found = values, defaulted, entity_found
        self.timestamps = np.where(entity_found, 0.0, np.nan)[:, None]


class Features:
    """Remembers the keys it was asked for: the real entity keys, whatever the privacy."""

    def __init__(self) -> None:
        self.keys: list[object] = []

    async def read_async(self, keys):
        self.keys.extend(keys)
        found = np.array([k in FEATURES for k in keys])
        values = np.array([FEATURES.get(k, (-1.0, 0.0)) for k in keys], dtype=np.float64)
        return Rows(values, np.repeat(~found[:, None], 2, axis=1), found)


class Recorder:
    """Publisher and prediction store at once: keeps what it was given."""

    def __init__(self) -> None:
        self.records: list[OutputRecord] = []
        self.stored_ids: list[str] = []

    async def publish(self, records) -> None:
        self.records.extend(records)

    async def put_predictions(
        self, event_ids, predicted_at, model, version, scores, matrix, infer_seconds=None
    ):
        self.stored_ids.extend(event_ids)

    async def put_shadow_scores(self, model, event_ids, scores, version=None, infer_seconds=None):
        self.stored_ids.extend(event_ids)


def message(offset: int, value: bytes | dict, key: bytes | None = None) -> InputMessage:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return InputMessage(key or f"secret-id-{offset}".encode(), raw, "events", 0, offset, NOW)


def event(i: int, **changes: object) -> dict:
    base = {"id": f"secret-id-{i}", "user": SECRET_USERS[i % 2], "amount": 5.0 + i, "kind": "a"}
    return {**base, **changes}


SECRETS = [*SECRET_USERS, "secret-id-", "secret-mail", "secret-in-an-array"]
BATCH = [
    message(0, event(0, email="secret-mail-0@example.com")),
    message(1, event(1)),
    message(2, event(2, email=["secret-mail-2@example.com"])),  # wrong type: withheld
    message(3, event(3, user="secret-user-" + "x" * 600)),  # above max_key_bytes
    message(4, b'["secret-in-an-array", 1]'),  # not an object
    message(5, event(5, kind="c")),  # unknown category of a field that is not withheld
]


def privacy_section(entity: str, originals: str) -> str:
    """The id hashed, the email dropped, the entity key hashed or dropped."""
    hashed_fields, dropped = (
        (["id", "user"], ["email"]) if entity == "hash" else (["id"], ["user", "email"])
    )
    return (
        f"privacy: {{hash: {hashed_fields}, drop: {dropped}, dead_letter_originals: {originals}}}"
    ).replace("'", "")


def leaks(data: bytes | None) -> list[str]:
    return [s for s in SECRETS if data is not None and s.encode() in data]


# --- the spec and the key ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        ("privacy: {hash: [nope]}", "privacy.hash: 'nope' is not a field of event.fields"),
        ("privacy: {hash: [user], drop: [user]}", "'user' is listed twice"),
        ("privacy: {drop: [amount]}", "privacy.drop: 'amount' is a model input"),
        ("privacy: {hash: [kind]}", "privacy.hash: 'kind' is a model input"),
        ("privacy: {drop: [id]}", "'id' is event.id_field: it keys every prediction"),
        ("privacy: {drop: [email], dead_letter_originals: maybe}", "keep"),
        ("privacy: {drop: [email], salt: x}", "privacy.salt"),
    ],
)
def test_an_invalid_privacy_section_names_the_field(privacy: str, expected: str) -> None:
    with pytest.raises(SpecError, match="invalid pipeline spec") as caught:
        spec_with(privacy)
    assert expected in str(caught.value)


def test_the_time_field_cannot_be_withheld() -> None:
    text = BASE.replace("    email:", "    at: {type: timestamp}\n    email:")
    text = text.replace("  id_field: id", "  id_field: id\n  time_field: at")
    with pytest.raises(SpecError, match="'at' is event.time_field"):
        load_spec_text(text + "privacy: {hash: [at]}", base_dir=Path("/tmp"))


def test_a_spec_that_hashes_refuses_to_run_without_the_key() -> None:
    spec = spec_with("privacy: {hash: [id]}")
    with pytest.raises(PrivacyError) as caught:
        Privacy.for_pipeline(spec, None)
    message_text = str(caught.value)
    assert "pipeline 'private'" in message_text and "['id']" in message_text
    assert "STREAMSCORE_PRIVACY_HASH_KEY is not set" in message_text
    # Dropping needs no key.
    assert Privacy.for_pipeline(spec_with("privacy: {drop: [user]}"), None).withheld == {"user"}


def test_the_hash_is_the_keyed_hmac_sha256_of_the_value() -> None:
    spec = spec_with("privacy: {hash: [id, user]}")
    privacy = Privacy.for_pipeline(spec, SecretStr(KEY))
    assert privacy.event_id("e1") == hashed("e1")
    assert privacy.entity_key(42) == hashed("42")  # an int key hashes as its text
    other = Privacy.for_pipeline(spec, SecretStr(KEY + "!"))
    assert other.event_id("e1") != privacy.event_id("e1")


def test_a_short_key_is_refused_and_never_quoted() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(privacy_hash_key="short")


def test_load_settings_does_not_quote_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_PRIVACY_HASH_KEY", "tiny-secret")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "STREAMSCORE_PRIVACY_HASH_KEY" in str(caught.value)
    assert "tiny-secret" not in str(caught.value)


def test_a_worker_process_gets_the_key_itself() -> None:
    env = settings_env(Settings(privacy_hash_key=KEY))
    assert env["STREAMSCORE_PRIVACY_HASH_KEY"] == KEY


# --- predictions and dead letters ---------------------------------------------------------


async def score(spec: PipelineSpec, onnx_scorer, privacy: Privacy):  # noqa: F811
    features = Features()
    pipeline = ScoringPipeline(
        spec, features, CountingScorer(onnx_scorer), Metrics(), clock=lambda: NOW, privacy=privacy
    )
    return await pipeline.score_batch(BATCH), features


@pytest.mark.parametrize("entity", ["hash", "drop"])
async def test_predictions_and_dead_letters_carry_no_withheld_value(
    entity: str,
    onnx_scorer,  # noqa: F811
) -> None:
    spec = spec_with(privacy_section(entity, "drop"))
    scored, features = await score(spec, onnx_scorer, Privacy.for_pipeline(spec, SecretStr(KEY)))

    assert features.keys == [SECRET_USERS[0], SECRET_USERS[1]]  # the real keys, for Feast
    predictions = [orjson.loads(r.value) for r in scored.predictions]
    assert [r.key for r in scored.predictions] == [
        hashed(f"secret-id-{i}").encode() for i in (0, 1)
    ]
    assert [p["event_id"] for p in predictions] == [hashed("secret-id-0"), hashed("secret-id-1")]
    if entity == "hash":
        assert [p["entity_key"] for p in predictions] == [hashed(u) for u in SECRET_USERS]
    else:
        assert all("entity_key" not in p for p in predictions)
    assert [p["features"]["stats__spend"] for p in predictions] == [10.0, 500.0]  # found

    letters = [orjson.loads(r.value) for r in scored.dead_letters]
    assert [d["reason"] for d in letters] == [
        "wrong_type", "too_large", "not_an_object", "unknown_category",
    ]  # fmt: skip
    errors = [d["error"] for d in letters]
    assert errors[0] == "field 'email': expected string, got list; value withheld (privacy)"
    assert errors[1] == "entity key field 'user' is 612 bytes, above max_key_bytes 512"
    assert errors[2] == "expected a JSON object, got list"
    assert errors[3] == "field 'kind': 'c' is not one of ['a', 'b']"  # not a withheld field
    for letter, record in zip(letters, scored.dead_letters, strict=True):
        assert letter["original_dropped"] is True and record.key is None
        assert letter["original_key_b64"] is None and letter["original_value_b64"] is None
        assert letter["original_value_size"] > 0
    for record in scored.records:
        assert leaks(record.key) == [] and leaks(record.value) == [], record


async def test_kept_originals_still_leave_the_values_out_of_the_error(onnx_scorer) -> None:  # noqa: F811
    spec = spec_with("privacy: {hash: [id], drop: [user, email]}")  # originals: kept
    scored, _ = await score(spec, onnx_scorer, Privacy.for_pipeline(spec, SecretStr(KEY)))
    letters = [orjson.loads(r.value) for r in scored.dead_letters]
    assert [r.key for r in scored.dead_letters] == [b"secret-id-2", b"secret-id-3",
                                                   b"secret-id-4", b"secret-id-5"]  # fmt: skip
    assert all(d["original_dropped"] is False and d["original_value_b64"] for d in letters)
    assert leaks(orjson.dumps([d["error"] for d in letters])) == []


async def test_without_privacy_records_carry_the_values(onnx_scorer) -> None:  # noqa: F811
    spec = spec_with("")
    scored, _ = await score(spec, onnx_scorer, NO_PRIVACY)
    predictions = [orjson.loads(r.value) for r in scored.predictions]
    assert [(p["event_id"], p["entity_key"]) for p in predictions] == [
        ("secret-id-0", SECRET_USERS[0]), ("secret-id-1", SECRET_USERS[1]),
    ]  # fmt: skip
    errors = [orjson.loads(r.value)["error"] for r in scored.dead_letters]
    assert "secret-mail-2@example.com" in errors[0] and "secret-in-an-array" in errors[2]


# --- shadow predictions and the prediction store -------------------------------------------


class ConstantShadow:
    name, version = "shadow_m", 1

    def score(self, matrix):
        return np.full(len(matrix), 0.25)


@pytest.mark.parametrize("entity", ["hash", "drop"])
async def test_shadow_records_and_the_prediction_store_carry_no_withheld_value(
    entity: str,
    onnx_scorer,  # noqa: F811
) -> None:
    spec = spec_with(privacy_section(entity, "drop"))
    privacy = Privacy.for_pipeline(spec, SecretStr(KEY))
    recorder, metrics = Recorder(), Metrics()
    pipeline = ScoringPipeline(
        spec, Features(), CountingScorer(onnx_scorer), metrics, clock=lambda: NOW, privacy=privacy
    )
    shadow = ShadowRunner(
        ConstantShadow(), pipeline=spec.name, topic="shadows", threshold=0.5, queue_batches=4,
        publisher=recorder, store=recorder, metrics=metrics, clock=lambda: NOW,
    )  # fmt: skip
    service = ScoringService(pipeline, recorder, metrics, store=recorder, shadows=[shadow])
    running = asyncio.ensure_future(shadow.run())
    try:
        await service.handle(BATCH)
        await asyncio.wait_for(shadow.drain(), 10)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        shadow.close()

    shadows = [orjson.loads(r.value) for r in recorder.records if r.topic == "shadows"]
    ids = [hashed("secret-id-0"), hashed("secret-id-1")]
    assert [s["event_id"] for s in shadows] == ids
    if entity == "hash":
        assert [s["entity_key"] for s in shadows] == [hashed(u) for u in SECRET_USERS]
    else:
        assert all("entity_key" not in s for s in shadows)
    assert recorder.stored_ids == ids + ids  # the primary's predictions, then the shadow's
    for record in recorder.records:
        assert leaks(record.key) == [] and leaks(record.value) == [], record


# --- labels --------------------------------------------------------------------------------


class Store:
    """The prediction store's read side, holding predictions under hashed ids."""

    def __init__(self, event_ids: list[str]) -> None:
        self.known = set(event_ids)
        self.asked: list[str] = []

    async def get(self, event_ids, shadow_models):
        self.asked.extend(event_ids)
        vector = np.zeros(4, dtype=np.float32)
        return [
            StoredPrediction(e, NOW, "unit_lr", 1, vector, {"unit_lr": 0.5})
            if e in self.known
            else None
            for e in event_ids
        ]

    async def count_forwarded(self, n: int) -> int:
        """The taken-labels counter the online shadows measure staleness against."""
        self.forwarded = getattr(self, "forwarded", 0) + n
        return self.forwarded


def label(event_id: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "label": 1, "label_time": "2023-11-14T22:13:30Z"})


async def test_labels_of_hashed_ids_join_and_their_dead_letters_withhold_the_id() -> None:
    spec = spec_with("privacy: {hash: [id], dead_letter_originals: drop}")
    privacy = Privacy.for_pipeline(spec, SecretStr(KEY))
    store = Store([hashed("secret-id-0"), hashed("secret-id-1")])
    joiner = LabelJoiner(spec, store, Metrics(), clock=lambda: NOW + 10, privacy=privacy)
    labels = [
        label("secret-id-1"),
        label("secret-id-0"),
        label("secret-id-" + "x" * 600),  # above max_key_bytes: a dead letter
        label("secret-id-never"),  # an orphan
    ]
    outcome = await joiner.join(
        [InputMessage(b"secret-id-k", v, "labels", 0, i, NOW) for i, v in enumerate(labels)]
    )

    assert outcome.counts == {"joined": 2, "late": 0, "orphan": 1, "invalid": 1}
    assert store.asked == [hashed(f"secret-id-{i}") for i in ("1", "0", "never")]
    joined = [record["event_id"] for record in outcome.joined]
    assert joined == [hashed("secret-id-1"), hashed("secret-id-0")]
    (letter,) = [orjson.loads(r.value) for r in outcome.dead_letters]
    assert letter["error"] == "'event_id' is 610 bytes, above max_key_bytes 512"
    assert letter["original_value_b64"] is None and outcome.dead_letters[0].key is None
    for record in outcome.dead_letters:
        assert leaks(record.key) == [] and leaks(record.value) == [], record


def test_a_worker_refuses_to_start_without_the_key(tmp_path: Path) -> None:
    """Before it connects to anything: nothing is ever published unhashed."""
    from streams.runtime.lifecycle import Lifecycle
    from streams.runtime.worker import build_worker

    spec = spec_with("privacy: {hash: [user]}")
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers="unreachable:1")
    lifecycle = Lifecycle(spec.name, batch_timeout=1.0, shutdown_timeout=1.0)
    with pytest.raises(PrivacyError, match="STREAMSCORE_PRIVACY_HASH_KEY is not set"):
        build_worker(spec, settings, Metrics(), lifecycle)
    assert not any(tmp_path.iterdir())  # no app was created


def test_the_demo_specs_commented_privacy_example_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"
    lines = path.read_text().splitlines()
    start = lines.index("# privacy:")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("# "))
    example = [line.removeprefix("# ") for line in lines[start:end]]
    text = "\n".join(lines[:start] + example + lines[end:])
    spec = load_spec_text(text, base_dir=path.parent)
    assert spec.privacy is not None and spec.privacy.hash == ("transaction_id", "card_id")
