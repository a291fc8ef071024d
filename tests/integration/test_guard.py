"""The guard on a real worker (role all, real Kafka and Redis): a canary version that gets
its labels wrong loses its alias by itself within its guard window, the worker serves the
primary to every key again, and the rollback is on the actions topic with its evidence; a
canary that serves as well as the primary keeps its alias."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime

import numpy as np
import onnx
import orjson
import pytest
from onnx import helper, numpy_helper

from models.manifest import ManifestFields
from models.registry import CHAMPION, ModelRegistry, ModelVersion
from models.scorer import PROBABILITIES
from streams.actions.record import read_actions
from streams.cli.generators import make_generator
from streams.runtime.connections import KafkaConnection
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from tests.integration.harness import PreparedPipeline, consume, create_topics, produce
from tests.integration.test_online_worker import outcome, wait_for

pytestmark = pytest.mark.integration

WINDOW = 50  # actions.guard.min_labels: the guard window
EVENTS = 160  # per phase: about half of them served by the canary (share 0.5)


def inverted(onnx_bytes: bytes) -> bytes:
    """The same classifier with its two class probabilities swapped: always the other
    class, with the same confidence. Every consumer of the probabilities reads the swap."""
    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    right = f"{PROBABILITIES}_right"
    for node in graph.node:
        node.output[:] = [right if o == PROBABILITIES else o for o in node.output]
        node.input[:] = [right if i == PROBABILITIES else i for i in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array([1, 0], np.int64), "swap"))
    swap = helper.make_node("Gather", [right, "swap"], [PROBABILITIES], axis=1)
    # Before its first consumer (a graph is topologically sorted): right after the producer.
    producer = next(i for i, node in enumerate(graph.node) if right in node.output)
    graph.node.insert(producer + 1, swap)
    return model.SerializeToString()


def register_copy(registry: ModelRegistry, champion: ModelVersion, onnx_bytes: bytes) -> int:
    manifest = champion.manifest.model_dump()
    fields = ManifestFields.model_validate(
        {k: v for k, v in manifest.items() if k in ManifestFields.model_fields}
    )
    return registry.register(champion.name, onnx_bytes, fields).version


def test_a_bad_canary_is_rolled_back_by_the_guard_and_a_good_one_is_not(
    card_fraud: PreparedPipeline, tmp_path
) -> None:
    # A registry of its own: a 'canary' alias must not reach other tests' workers.
    model_dir = tmp_path / "models"
    shutil.copytree(card_fraud.settings.model_dir, model_dir)
    registry = ModelRegistry(model_dir)
    base = card_fraud.spec
    name = base.model.name
    champion = registry.resolve(name, CHAMPION)
    bad = register_copy(registry, champion, inverted(champion.read_onnx()))
    good = register_copy(registry, champion, champion.read_onnx())
    registry.set_alias(name, "canary", bad)

    suffix = uuid.uuid4().hex[:8]
    model = {**base.model.model_dump(exclude_none=True), "canary": {"share": 0.5}}
    guard = {"min_labels": WINDOW, "metric": "accuracy", "margin": 0.15}
    labels_spec = {**base.labels.model_dump(), "topic": f"labels-{suffix}"}
    spec_path, spec = card_fraud.variant(
        suffix, model=model, labels=labels_spec, actions={"guard": guard}
    )
    asyncio.run(create_topics(card_fraud.settings, spec))
    generator = make_generator(spec, seed=16)
    now = datetime.now(UTC)
    labelled = [generator.next_labelled(now) for _ in range(3 * EVENTS)]
    events = [(e["transaction_id"].encode(), orjson.dumps(e)) for e, _ in labelled]
    labels = [
        (key, orjson.dumps({"event_id": key.decode(), "label": y}))
        for (key, _), (_, y) in zip(events, labelled, strict=True)
    ]
    settings = card_fraud.settings.model_copy(
        update={"model_dir": model_dir, "metrics_port": free_port()}
    )
    bootstrap = settings.kafka_bootstrap_servers
    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")

    def served(phase: int) -> dict[str, int]:
        """Which arm served each event of ``phase``: how many each."""
        chunk = events[phase * EVENTS : (phase + 1) * EVENTS]
        keys = {key for key, _ in chunk}
        read = asyncio.run(consume(bootstrap, [spec.output.topic], 0, 60, worker, keys=keys))
        arms: dict[str, int] = {}
        for record in read[spec.output.topic]:
            if record.key in keys:
                arm = orjson.loads(record.value)["served_by"]
                arms[arm] = arms.get(arm, 0) + 1
        return arms

    def canary_version() -> float | None:
        return worker.metric("streamscore_canary_version", pipeline=spec.name, model=name)

    def guard_labels(arm: str) -> float:
        found = worker.metric(
            "streamscore_guard_labels", pipeline=spec.name, model=name, watch="canary", arm=arm
        )
        return found or 0.0

    try:
        wait_for(lambda: canary_version() == bad, 60, worker, "the bad canary serving")
        # 1. The bad canary serves about half the keys; their labels condemn it.
        asyncio.run(produce(bootstrap, spec.input.topic, events[:EVENTS]))
        arms = served(0)
        assert arms.get("canary", 0) > WINDOW and arms.get("primary", 0) > WINDOW, arms
        asyncio.run(produce(bootstrap, spec.labels.topic, labels[:EVENTS]))
        wait_for(lambda: "canary" not in registry.aliases(name), 60, worker, "the rollback")
        (removal,) = [c for c in registry.alias_history(name) if c.version is None]
        assert (removal.alias, removal.previous) == ("canary", bad)
        kafka = KafkaConnection(bootstrap)
        (action,) = asyncio.run(read_actions(kafka, spec.actions_topic))
        assert (action["action"], action["decided_by"], action["alias"]) == (
            "rollback", "guard", "canary"
        )  # fmt: skip
        assert (action["from_version"], action["to_version"]) == (bad, None)
        evidence = action["evidence"]
        assert evidence["watch"] == "canary" and evidence["metric"] == "accuracy"
        assert evidence["labels"] == WINDOW and evidence["margin"] == 0.15
        arms_figures = evidence["arms"]
        assert arms_figures[f"{name}@{bad}"] < arms_figures[f"{name} (primary)"] - 0.15
        rollbacks = {"pipeline": spec.name, "model": name, "watch": "canary"}
        assert worker.metric("streamscore_guard_rollbacks_total", **rollbacks) == 1

        # 2. Every worker follows the alias: the primary serves every key again.
        wait_for(lambda: canary_version() == 0, 30, worker, "the canary to stop serving")
        asyncio.run(produce(bootstrap, spec.input.topic, events[EVENTS : 2 * EVENTS]))
        assert served(1) == {"primary": EVENTS}

        # 3. A canary as good as the primary (the same model) is judged and kept.
        registry.set_alias(name, "canary", good)
        wait_for(lambda: canary_version() == good, 30, worker, "the good canary serving")
        asyncio.run(produce(bootstrap, spec.input.topic, events[2 * EVENTS :]))
        assert served(2).get("canary", 0) > WINDOW
        asyncio.run(produce(bootstrap, spec.labels.topic, labels[EVENTS:]))
        wait_for(lambda: outcome(worker, spec, "joined") >= 3 * EVENTS, 60, worker, "every label")
        wait_for(
            lambda: guard_labels("candidate") == WINDOW and guard_labels("baseline") == WINDOW,
            30, worker, "the good canary's full guard window",
        )  # fmt: skip
        assert registry.aliases(name)["canary"] == good
        assert len(asyncio.run(read_actions(kafka, spec.actions_topic))) == 1
        assert worker.metric("streamscore_guard_rollbacks_total", **rollbacks) == 1
    finally:
        assert worker.stop() == 0, worker.log_tail()
