"""A real worker whose aliases point at versions that cannot serve: it starts anyway on the
last good versions, and refuses a later move to another bad version while it scores."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from models.manifest import ManifestFields
from models.registry import CHAMPION, ModelRegistry, ModelVersion
from streams.cli.generators import make_generator
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from streams.scoring.validation import parse_timestamp
from tests.integration.harness import PreparedPipeline, consume, create_topics, produce

pytestmark = pytest.mark.integration


def wait_for(condition, timeout: float, worker: WorkerProcess, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.running, f"worker exited while waiting for {what}:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s:\n{worker.log_tail()}"
        time.sleep(0.2)


def register_like(registry: ModelRegistry, version: ModelVersion, onnx: bytes) -> ModelVersion:
    """A new version of the same model with ``version``'s manifest and other bytes (the
    registry computes their sha256, so the manifest matches them)."""
    fields = ManifestFields.model_validate(
        {k: v for k, v in version.manifest.model_dump().items() if k in ManifestFields.model_fields}
    )
    return registry.register(version.name, onnx, fields)


def onnx_of_width(width: int) -> bytes:
    x = np.random.default_rng(0).normal(size=(40, width)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    return bytes(to_onnx(model, x[:1], options={id(model): {"zipmap": False}}).SerializeToString())


def test_bad_versions_behind_the_aliases_never_stop_the_worker(
    card_fraud: PreparedPipeline, tmp_path: Path
) -> None:
    # A registry of its own: other tests follow the shared one's aliases.
    model_dir = tmp_path / "models"
    shutil.copytree(card_fraud.settings.model_dir, model_dir)
    settings = card_fraud.settings.model_copy(
        update={"model_dir": model_dir, "metrics_port": free_port()}
    )
    spec_path, spec = card_fraud.variant(uuid.uuid4().hex[:8])
    registry = ModelRegistry(model_dir)
    name, shadow = spec.model.name, spec.shadows[0].name
    good = registry.resolve(name, CHAMPION)
    good_shadow = registry.resolve(shadow, CHAMPION)
    onnx = good.read_onnx()
    truncated = register_like(registry, good, onnx[: len(onnx) // 2])
    narrow = register_like(registry, good, onnx_of_width(5))
    shadow_onnx = good_shadow.read_onnx()
    truncated_shadow = register_like(registry, good_shadow, shadow_onnx[: len(shadow_onnx) // 3])
    # Both aliases were moved to truncated files before the worker starts.
    registry.set_alias(name, CHAMPION, truncated.version)
    registry.set_alias(shadow, CHAMPION, truncated_shadow.version)

    asyncio.run(create_topics(settings, spec))
    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")
    bootstrap = settings.kafka_bootstrap_servers
    generator = make_generator(spec, seed=11)
    sent: list[str] = []
    stop = threading.Event()

    def keep_producing() -> None:
        async def loop() -> None:
            while not stop.is_set():
                batch = [generator.next_event(datetime.now(UTC)) for _ in range(20)]
                records = [(e["transaction_id"].encode(), orjson.dumps(e)) for e in batch]
                await produce(bootstrap, spec.input.topic, records)
                sent.extend(e["transaction_id"] for e in batch)
                await asyncio.sleep(0.05)

        asyncio.run(loop())

    def versions_since(moment: float) -> set[int]:
        out = asyncio.run(consume(bootstrap, [spec.output.topic], 10**9, 1.0))
        return {
            p["model_version"]
            for p in map(orjson.loads, (r.value for r in out.get(spec.output.topic, [])))
            if parse_timestamp(p["scored_at"]) >= moment
        }

    def metric(metric_name: str, **labels: str) -> float | None:
        return worker.metric(metric_name, pipeline=spec.name, **labels)

    producer = threading.Thread(target=keep_producing)
    producer.start()
    try:
        wait_for(lambda: good.version in versions_since(0), 90, worker, "predictions")
        assert metric("streamscore_model_refused_version", model=name) == truncated.version
        assert metric("streamscore_model_refused_version", model=shadow) == (
            truncated_shadow.version
        )
        assert metric("streamscore_model_refusals_total", model=name, reason="unloadable") == 1

        moved_at = time.time()
        registry.set_alias(name, CHAMPION, narrow.version)  # a valid ONNX of width 5
        wait_for(
            lambda: metric("streamscore_model_refused_version", model=name) == narrow.version,
            30, worker, "the refusal of the narrow version",
        )  # fmt: skip
        refused_at = time.time()
        wait_for(lambda: bool(versions_since(refused_at)), 30, worker, "predictions after it")
        assert versions_since(moved_at) == {good.version}
        assert metric("streamscore_model_refusals_total", model=name, reason="width") == 1
    finally:
        stop.set()
        producer.join()
        out = asyncio.run(consume(bootstrap, [spec.output.topic], len(sent), 60, worker))
        code = worker.stop()
    predictions = [orjson.loads(r.value) for r in out[spec.output.topic]]
    assert sorted(p["event_id"] for p in predictions) == sorted(sent)  # none lost, none twice
    assert {p["model_version"] for p in predictions} == {good.version}
    assert code == 0, worker.log_tail()
    log = worker.log_path.read_text()
    assert log.count(f"'{name}' version {truncated.version} refused (unloadable)") == 1, log
    assert log.count(f"'{name}' version {narrow.version} refused (width)") == 1, log
