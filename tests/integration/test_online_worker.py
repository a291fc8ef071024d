"""Labels and model versions through real workers: learning survives a restart and a
replayed labels topic, and promote / rollback switch the primary with no event lost."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
from typer.testing import CliRunner

from models.manifest import ManifestFields
from models.online import OnlineLearner
from models.registry import ModelRegistry, ModelVersion
from streams.cli.generators import make_generator
from streams.cli.main import app as cli
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from streams.runtime.worker import ALIAS_CHECK_SECONDS
from streams.scoring.prediction_store import Keys
from streams.scoring.validation import parse_timestamp
from streams.spec import PipelineSpec
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    start_worker,
)

pytestmark = pytest.mark.integration


def wait_for(condition, timeout: float, worker: WorkerProcess, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.running, f"worker exited while waiting for {what}:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s:\n{worker.log_tail()}"
        time.sleep(0.2)


def learned(worker: WorkerProcess, spec) -> float:
    return worker.metric("streamscore_online_learned_total", pipeline=spec.name) or 0.0


def outcome(worker: WorkerProcess, spec, name: str) -> float:
    return worker.metric("streamscore_labels_total", pipeline=spec.name, outcome=name) or 0.0


Records = list[tuple[bytes, bytes]]


def labelled_traffic(
    card_fraud: PreparedPipeline, n: int, seed: int
) -> tuple[str, Path, PipelineSpec, Records, Records]:
    """A variant of the pipeline with its own labels topic (created), ``n`` events and
    their labels: (suffix, spec path, spec, event records, label records)."""
    suffix = uuid.uuid4().hex[:8]
    labels = {**card_fraud.spec.labels.model_dump(), "topic": f"labels-{suffix}"}
    spec_path, spec = card_fraud.variant(suffix, labels=labels)
    asyncio.run(create_topics(card_fraud.settings, spec))
    generator = make_generator(spec, seed=seed)
    now = datetime.now(UTC)
    labelled = [generator.next_labelled(now) for _ in range(n)]
    events = [(e["transaction_id"].encode(), orjson.dumps(e)) for e, _ in labelled]
    label_records = [
        (e["transaction_id"].encode(), orjson.dumps({"event_id": e["transaction_id"], "label": y}))
        for e, y in labelled
    ]
    return suffix, spec_path, spec, events, label_records


def test_learning_survives_restart_and_a_replayed_labels_topic(
    card_fraud: PreparedPipeline,
) -> None:
    _, spec_path, spec, events, label_records = labelled_traffic(card_fraud, 200, seed=21)
    labels_topic = spec.labels.topic
    settings = card_fraud.settings
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(produce(bootstrap, spec.input.topic, events))

    worker_settings = settings.model_copy(update={"metrics_port": free_port()})
    worker = WorkerProcess(spec_path, worker_settings, card_fraud.workdir / f"{spec.name}-1.log")
    try:
        asyncio.run(consume(bootstrap, [spec.output.topic], len(events), 90, worker))
        # Labels arrive after the predictions; some twice, plus one for an unknown event.
        extra = label_records[:20] + [(b"x", orjson.dumps({"event_id": "unknown", "label": 1}))]
        asyncio.run(produce(bootstrap, labels_topic, label_records[::-1] + extra))
        wait_for(lambda: learned(worker, spec) >= 200, 90, worker, "200 learned labels")
        wait_for(lambda: outcome(worker, spec, "duplicate") >= 20, 30, worker, "20 duplicates")
        wait_for(lambda: outcome(worker, spec, "orphan") >= 1, 30, worker, "the orphan label")
        assert learned(worker, spec) == 200
        assert outcome(worker, spec, "duplicate") == 20 and outcome(worker, spec, "orphan") == 1
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # Restart and replay every label again: the new process resumes the checkpoint and
    # learns nothing twice.
    asyncio.run(produce(bootstrap, labels_topic, label_records))
    worker_settings = settings.model_copy(update={"metrics_port": free_port()})
    worker = WorkerProcess(spec_path, worker_settings, card_fraud.workdir / f"{spec.name}-2.log")
    try:
        wait_for(
            lambda: outcome(worker, spec, "duplicate") >= 200, 90, worker, "the replayed labels"
        )
        assert learned(worker, spec) == 0  # this process learned nothing new
    finally:
        assert worker.stop() == 0, worker.log_tail()
    snapshot = redis.Redis.from_url(settings.redis_url).get(Keys(spec.name).snapshot)
    assert OnlineLearner.from_bytes(snapshot).learned == 200

    # The compare report sees the shadows' outputs and every model's labelled evaluation.
    env = {
        "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMSCORE_REDIS_URL": settings.redis_url,
    }
    result = CliRunner().invoke(cli, ["compare", "--spec", str(spec_path)], env=env)
    assert result.exit_code == 0, result.output
    for model in (spec.model.name, *(s.name for s in spec.shadows), spec.online.name):
        assert model in result.output


def test_scoring_and_learning_workers_split_the_work(card_fraud: PreparedPipeline) -> None:
    """A 'scoring' worker scores and remembers predictions; a separate 'learning' worker
    joins the labels against them and trains: neither does the other's part."""
    suffix, spec_path, spec, events, label_records = labelled_traffic(card_fraud, 120, seed=22)
    settings = card_fraud.settings
    bootstrap = settings.kafka_bootstrap_servers

    def start(role: str) -> WorkerProcess:
        role_settings = settings.model_copy(
            update={"metrics_port": free_port(), "worker_role": role}
        )
        return WorkerProcess(spec_path, role_settings, card_fraud.workdir / f"{suffix}-{role}.log")

    scoring, learning = start("scoring"), start("learning")
    try:
        asyncio.run(produce(bootstrap, spec.input.topic, events))
        asyncio.run(consume(bootstrap, [spec.output.topic], len(events), 90, scoring))
        asyncio.run(produce(bootstrap, spec.labels.topic, label_records))
        wait_for(lambda: learned(learning, spec) >= 120, 90, learning, "120 learned labels")
        assert outcome(learning, spec, "joined") == 120
        assert learned(scoring, spec) == 0 and outcome(scoring, spec, "joined") == 0
        assert scoring.metric("streamscore_events_total", pipeline=spec.name) == 120
        assert not learning.metric("streamscore_events_total", pipeline=spec.name)
    finally:
        assert scoring.stop() == 0, scoring.log_tail()
        assert learning.stop() == 0, learning.log_tail()


def test_promote_and_rollback_switch_the_primary_with_no_event_lost(
    card_fraud: PreparedPipeline,
) -> None:
    spec_path, spec = card_fraud.variant(uuid.uuid4().hex[:8])
    settings = card_fraud.settings
    registry = ModelRegistry(settings.model_dir)
    champion = registry.resolve(spec.model.name, "champion")
    # A second version of the same model (same bytes: what matters is which one is used).
    candidate = _register_copy(registry, champion)
    asyncio.run(create_topics(settings, spec))
    worker = start_worker(card_fraud, spec_path, spec.name)
    bootstrap = settings.kafka_bootstrap_servers
    generator = make_generator(spec, seed=8)
    sent: list[str] = []
    stop = threading.Event()

    def keep_producing() -> None:
        async def loop() -> None:
            while not stop.is_set():
                batch = [generator.next_event(datetime.now(UTC)) for _ in range(50)]
                await produce(
                    bootstrap,
                    spec.input.topic,
                    [(e["transaction_id"].encode(), orjson.dumps(e)) for e in batch],
                )
                sent.extend(e["transaction_id"] for e in batch)
                await asyncio.sleep(0.05)

        asyncio.run(loop())

    producer = threading.Thread(target=keep_producing)
    producer.start()
    runner = CliRunner()
    env = {"STREAMSCORE_MODEL_DIR": str(settings.model_dir)}

    def versions_since(moment: float) -> set[int]:
        """Model versions of the predictions scored at or after ``moment``."""
        out = asyncio.run(consume(bootstrap, [spec.output.topic], 10**9, 1.0))
        return {
            p["model_version"]
            for p in map(orjson.loads, (r.value for r in out.get(spec.output.topic, [])))
            if parse_timestamp(p["scored_at"]) >= moment
        }

    try:
        wait_for(lambda: champion.version in versions_since(0), 90, worker, "champion predictions")
        promoted_at = time.time()
        result = runner.invoke(
            cli, ["models", "promote", spec.model.name, str(candidate.version)], env=env
        )
        assert result.exit_code == 0, result.output
        wait_for(
            lambda: candidate.version in versions_since(promoted_at), 60, worker, "v2 predictions"
        )
        rolled_back_at = time.time() + 2 * ALIAS_CHECK_SECONDS  # after the swap has surely happened
        result = runner.invoke(cli, ["models", "rollback", spec.model.name], env=env)
        assert result.exit_code == 0, result.output
        wait_for(
            lambda: versions_since(rolled_back_at) == {champion.version}, 60, worker, "rollback"
        )
    finally:
        stop.set()
        producer.join()
        out = asyncio.run(consume(bootstrap, [spec.output.topic], len(sent), 60, worker))
        code = worker.stop()
    predictions = [orjson.loads(r.value) for r in out[spec.output.topic]]
    assert sorted(p["event_id"] for p in predictions) == sorted(sent)  # none lost, none twice
    assert {p["model_version"] for p in predictions} == {champion.version, candidate.version}
    assert code == 0, worker.log_tail()


def _register_copy(registry: ModelRegistry, version: ModelVersion) -> ModelVersion:
    fields = ManifestFields.model_validate(
        {k: v for k, v in version.manifest.model_dump().items() if k in ManifestFields.model_fields}
    )
    return registry.register(version.name, version.read_onnx(), fields)
