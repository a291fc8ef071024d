"""Retraining from the stream on a real worker: the labels it joins are kept on the labelled
topic, ``streamscore train --from-stream`` registers a challenger whose manifest names
exactly the records it read, and the running worker shadows it (and the label join
evaluates it) without a restart; removing the alias stops the shadow."""

from __future__ import annotations

import asyncio
import shutil
import time

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from typer.testing import CliRunner

from models.registry import CHALLENGER, ModelRegistry
from streams.cli.main import app as cli
from streams.cli.train_stream import read_labelled
from streams.learning.labelled import decode_batch
from streams.learning.labelled_frame import LabelledRecord, build_frame
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from tests.integration.harness import PreparedPipeline, consume, produce, read_to_end
from tests.integration.test_online_worker import labelled_traffic, outcome, wait_for

pytestmark = pytest.mark.integration

TRAINED_ON = 300  # events, each labelled once
AFTER = 60  # events scored once the challenger is registered


def test_a_challenger_trained_from_the_stream_is_shadowed_without_a_restart(
    card_fraud: PreparedPipeline, tmp_path
) -> None:
    _, spec_path, spec, events, labels = labelled_traffic(card_fraud, TRAINED_ON + AFTER, seed=41)
    # A registry of its own: a 'challenger' alias must not reach other tests' workers.
    model_dir = tmp_path / "models"
    shutil.copytree(card_fraud.settings.model_dir, model_dir)
    settings = card_fraud.settings.model_copy(
        update={"model_dir": model_dir, "metrics_port": free_port()}
    )
    bootstrap = settings.kafka_bootstrap_servers
    registry = ModelRegistry(model_dir)
    name, shadow = spec.model.name, spec.challenger_shadow
    assert spec.labelled_topic == f"{spec.name}-labelled" and shadow == f"{name}@challenger"
    env = {
        "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMSCORE_REDIS_URL": settings.redis_url,
        "STREAMSCORE_MODEL_DIR": str(model_dir),
    }
    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")

    def challenger_info() -> float | None:
        return worker.metric("streamscore_model_info", pipeline=spec.name, role="challenger")

    try:
        first, then = events[:TRAINED_ON], events[TRAINED_ON:]
        asyncio.run(produce(bootstrap, spec.input.topic, first))
        asyncio.run(consume(bootstrap, [spec.output.topic], TRAINED_ON, 90, worker))
        asyncio.run(produce(bootstrap, spec.labels.topic, labels[:TRAINED_ON]))
        wait_for(lambda: outcome(worker, spec, "joined") >= TRAINED_ON, 90, worker, "the labels")
        kept = asyncio.run(read_to_end(bootstrap, {spec.labelled_topic: 1}))[spec.labelled_topic]
        assert sum(decode_batch(r.value).rows for r in kept) == TRAINED_ON
        assert not challenger_info()

        result = CliRunner().invoke(
            cli, ["train", "--spec", str(spec_path), "--from-stream"], env=env
        )
        assert result.exit_code == 0, result.output
        assert "as 'challenger'" in result.output
        version = registry.resolve(name, CHALLENGER)
        lineage = version.manifest.lineage
        assert lineage is not None and lineage.topic == spec.labelled_topic
        assert lineage.offsets == {0: (kept[0].offset, kept[-1].offset)}
        frame, _ = build_frame(
            [LabelledRecord(0, r.offset, decode_batch(r.value)) for r in kept],
            spec.name,
            tuple(spec.input_columns()),
        )
        assert (lineage.rows, lineage.sha256) == (TRAINED_ON, frame.sha256())
        assert lineage.holdout_rows == 60 and set(lineage.metrics) >= {"accuracy", "log_loss"}
        # --since: only records written from then on (here none), and a refusal in one line.
        everything = asyncio.run(read_labelled(spec, settings, since=0.0))
        assert [(r.offset, r.batch.event_ids) for r in everything if r.batch] == [
            (r.offset, decode_batch(r.value).event_ids) for r in kept
        ]
        assert asyncio.run(read_labelled(spec, settings, since=time.time() + 3600)) == []
        args = ["train", "--spec", str(spec_path), "--from-stream", "--since", "2099-01-01"]
        refused = CliRunner().invoke(cli, args, env=env)
        assert refused.exit_code == 1 and "0 labelled rows" in refused.output
        assert registry.aliases(name)[CHALLENGER] == version.version

        # The running worker picks the alias up and scores the challenger in shadow.
        wait_for(lambda: challenger_info() == 1, 30, worker, "the challenger shadow")
        asyncio.run(produce(bootstrap, spec.input.topic, then))
        scored = challenger_records(bootstrap, spec.shadow_topic, shadow, AFTER, worker)
        assert {orjson.loads(r.value)["model_version"] for r in scored} == {version.version}
        assert {r.key for r in scored} == {key for key, _ in then}
        # Its scores are stored, so the label join evaluates it like any shadow.
        asyncio.run(produce(bootstrap, spec.labels.topic, labels[TRAINED_ON:]))
        count = {"pipeline": spec.name, "model": shadow, "metric": "window_count"}
        wait_for(
            lambda: worker.metric("streamscore_online_metric", **count) == AFTER,
            60, worker, "the challenger's labelled evaluation",
        )  # fmt: skip

        registry.remove_alias(name, CHALLENGER)
        wait_for(lambda: not challenger_info(), 30, worker, "the challenger shadow to stop")
    finally:
        assert worker.stop() == 0, worker.log_tail()


def challenger_records(
    bootstrap: str, topic: str, model: str, count: int, worker: WorkerProcess
) -> list[ConsumerRecord]:
    """Shadow records of ``model``, until ``count`` of them (or 60 s)."""
    deadline = time.monotonic() + 60
    found: list[ConsumerRecord] = []
    while len(found) < count and time.monotonic() < deadline:
        read = asyncio.run(consume(bootstrap, [topic], 10**9, timeout=2, worker=worker))
        found = [r for r in read.get(topic, []) if orjson.loads(r.value)["model"] == model]
    assert len(found) == count, worker.log_tail()
    return found
