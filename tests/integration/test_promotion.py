"""Guarded promotion on the real broker and Redis: the learner keeps the served scores of
each model version as evidence, ``models promote --if-better`` refuses a candidate the
evidence does not support and promotes one it does, and ``models history`` shows both
actions from the actions topic. No worker process: seconds."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from typer.testing import CliRunner

from models.manifest import ManifestFields
from models.registry import CHAMPION, ModelRegistry
from streams.actions.counter import ActionsCounter
from streams.actions.evidence import EvidenceLog, read_evidence, read_inference
from streams.actions.record import action_record, publish_actions, read_actions
from streams.cli.main import app as cli
from streams.learning.join import LabelJoiner
from streams.learning.learner import LearnerService
from streams.metrics import Metrics
from streams.runtime.connections import KafkaConnection
from streams.scoring.canary import arm
from streams.scoring.prediction_store import Keys, PredictionStore
from streams.scoring.records import InputMessage
from tests.integration.harness import PreparedPipeline

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0


async def test_the_learner_keeps_each_versions_served_scores_as_evidence(
    card_fraud: PreparedPipeline, redis_url: str, redis_client: aioredis.Redis
) -> None:
    spec = card_fraud.spec.model_copy(update={"name": f"evidence-{uuid.uuid4().hex[:8]}"})
    promote = spec.actions.promote.model_copy(update={"evidence_labels": 30, "min_labels": 30})
    spec = spec.model_copy(update={"actions": spec.actions.model_copy(update={"promote": promote})})
    store = PredictionStore(redis_client, spec.name, 60.0)
    ids = [f"e{i}" for i in range(40)]
    vectors = np.zeros((40, len(spec.input_columns())), dtype=np.float32)
    scores = [i / 40 for i in range(40)]
    await store.put_predictions(ids, T0, "fraud_gbt", 1, scores, vectors, infer_seconds=0.004)
    # The shadow shed the last 10 events' batch: no score, no entry for it there.
    await store.put_shadow_scores("fraud_lr", ids[:30], [0.5] * 30, 3, infer_seconds=0.006)
    joiner = LabelJoiner(spec, store, Metrics(), clock=lambda: T0 + 1)
    messages = [
        InputMessage(None, orjson.dumps({"event_id": i, "label": n % 2}), "l", 0, n, T0)
        for n, i in enumerate(ids)
    ]
    joined = (await joiner.join(messages)).joined
    learner = LearnerService(spec, redis_client, Metrics(), clock=lambda: T0 + 1)
    assert await learner.handle(joined) == 40
    assert await learner.handle(joined) == 0  # replayed: nothing twice, in evidence too
    sync = redis.Redis.from_url(redis_url)
    events = read_evidence(sync, spec.name)
    assert len(events) == 30  # evidence_labels: the newest 30 of the 40 learned
    assert [e.event_id for e in events] == ids[10:]  # oldest first
    assert events[0].scores == {"fraud_gbt@1": 0.25, "fraud_lr@3": 0.5}  # not the online model
    assert events[-1].scores == {"fraud_gbt@1": 39 / 40} and events[-1].label == 1
    inference = read_inference(sync, spec.name)
    assert inference["fraud_gbt@1"].events == 40 and inference["fraud_lr@3"].events == 30
    assert inference["fraud_gbt@1"].per_event == pytest.approx(0.004 / 40)


def test_promote_if_better_refuses_then_promotes_and_history_shows_both(
    card_fraud: PreparedPipeline, tmp_path: Path
) -> None:
    settings = card_fraud.settings
    model_dir = tmp_path / "models"  # a registry of its own: others follow the shared aliases
    shutil.copytree(settings.model_dir, model_dir)
    registry = ModelRegistry(model_dir)
    spec_path, spec = card_fraud.variant(uuid.uuid4().hex[:8])
    name = spec.model.name
    champion = registry.resolve(name, CHAMPION)
    fields = ManifestFields.model_validate(
        {
            k: v
            for k, v in champion.manifest.model_dump().items()
            if k in ManifestFields.model_fields
        }
    )
    worse = registry.register(name, champion.read_onnx(), fields)
    better = registry.register(name, champion.read_onnx(), fields)
    # What a challenger shadow's served scores look like to the learner: the same labelled
    # events, scored by the champion and by both candidates (each an arm: model@version).
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1500)
    towards = labels - 0.5

    def served(strength: float) -> list[float]:
        return np.clip(0.5 + strength * towards + rng.normal(0, 0.15, 1500), 0.01, 0.99).tolist()

    arms = {
        arm(name, champion.version): served(0.3),
        arm(name, worse.version): served(0.25),
        arm(name, better.version): served(0.6),
    }
    entries = [
        orjson.dumps({"e": f"e{i}", "y": y, "t": T0 + i, "s": {a: s[i] for a, s in arms.items()}})
        for i, y in enumerate(labels.tolist())
    ]
    sync = redis.Redis.from_url(settings.redis_url)
    sync.hset(
        Keys(spec.name).inference,
        mapping={
            f"{a} {kind}": value
            for a in arms
            for kind, value in (("seconds", 0.5), ("events", 10_000))
        },
    )

    async def write_evidence() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            await EvidenceLog(client, spec.name, 20_000).add(entries)
        finally:
            await client.aclose()

    asyncio.run(write_evidence())
    env = {
        "STREAMSCORE_MODEL_DIR": str(model_dir),
        "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "STREAMSCORE_REDIS_URL": settings.redis_url,
        "COLUMNS": "200",
    }
    runner = CliRunner()

    def models(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["models", *args, "--spec", str(spec_path)], env=env)
        return result.exit_code, result.output

    code, out = models("promote", name, str(worse.version), "--if-better")
    assert code == 1, out
    assert f"{name}@{worse.version} against {name}@{champion.version}" in out and "refuse" in out
    assert "refused: not better by the margin: log_loss gain -" in out
    assert f"{name}: champion stays at version {champion.version}" in out
    assert registry.aliases(name)[CHAMPION] == champion.version

    code, out = models("promote", name, str(better.version), "--if-better")
    assert code == 0, out
    assert "paired labels" in out and "1500" in out and ": promote" in out
    assert f"champion -> version {better.version} (was version {champion.version})" in out
    assert registry.aliases(name)[CHAMPION] == better.version

    code, out = models("rollback", name)
    assert code == 0, out
    assert registry.aliases(name)[CHAMPION] == champion.version

    records = asyncio.run(read_actions(KafkaConnection.from_settings(settings), spec.actions_topic))
    assert [r["action"] for r in records] == ["refusal", "promotion", "rollback"]
    refusal, promotion, rollback = records
    assert (refusal["from_version"], refusal["to_version"]) == (champion.version, worse.version)
    assert refusal["reasons"] and refusal["reasons"][0].startswith("not better by the margin")
    assert promotion["evidence"]["labels"] == 1500 and promotion["evidence"]["interval"][0] > 0
    assert promotion["reasons"] == [] and "@" in promotion["decided_by"]
    assert (rollback["from_version"], rollback["to_version"]) == (better.version, champion.version)
    assert rollback["evidence"] is None

    code, out = models("history", name)
    assert code == 0, out
    lines = [line for line in out.splitlines() if name in line and "→" in line]
    assert [line.split()[2] for line in lines] == ["refusal", "promotion", "rollback"], out
    assert "not better by the margin" in out and "log_loss gain +" in out


async def test_a_learning_worker_counts_the_actions_recorded_after_it_started(
    card_fraud: PreparedPipeline,
) -> None:
    settings = card_fraud.settings
    spec = card_fraud.spec.model_copy(update={"name": f"counted-{uuid.uuid4().hex[:8]}"})
    kafka = KafkaConnection.from_settings(settings)

    def record(action: str) -> dict:
        return action_record(
            action, pipeline=spec.name, model="m", alias="champion", from_version=1,
            to_version=2, decided_by="test@host",
        )  # fmt: skip

    await publish_actions(kafka, spec.actions_topic, [record("rollback")])  # before: not counted
    metrics = Metrics()
    counter = ActionsCounter(spec, kafka, metrics)
    await counter.start()
    try:
        await asyncio.wait_for(counter.following.wait(), 30)
        await publish_actions(
            kafka, spec.actions_topic, [record("promotion"), record("refusal"), record("refusal")]
        )

        def count(action: str) -> float | None:
            labels = {"pipeline": spec.name, "action": action}
            return metrics.registry.get_sample_value("streamscore_actions_total", labels)

        async with asyncio.timeout(30):
            while count("refusal") != 2:
                await asyncio.sleep(0.05)
        assert (count("promotion"), count("rollback"), count("other")) == (1, 0, 0)
    finally:
        await counter.stop()
