"""A regression pipeline's shadows make no decisions: a regressor's score is a value, so a
threshold (and with it agreement and changed decisions) means nothing. Their records carry
no ``decision``; the score difference still compares them; ``compare`` shows '-' for the
agreement and MAE/RMSE columns for the labelled evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

import streams.cli.compare
from models.evaluation import RollingEvaluation
from streams.cli.compare import compare_shadows, report
from streams.metrics import Metrics
from streams.shadows.shadow import ShadowBatch, ShadowRunner
from tests.unit.test_shadow_catch_up import run_until_drained
from tests.unit.test_shadow_follow import Publisher
from tests.unit.test_spec_task import spec

PRIMARY = np.array([10.0, 0.2, 55.0])


class Constant:
    """A regression shadow that predicts 30 for everything."""

    name, version = "eta_lr", 4

    def score(self, matrix: Any) -> np.ndarray:
        return np.full(len(matrix), 30.0)


async def shadow_records(task: str) -> tuple[list[dict[str, Any]], Metrics]:
    metrics, publisher = Metrics(), Publisher()
    runner = ShadowRunner(
        Constant(), pipeline="p", topic="shadows", threshold=None, queue_batches=2,
        publisher=publisher, store=None, metrics=metrics, task=task,  # type: ignore[arg-type]
    )  # fmt: skip
    runner.offer(
        ShadowBatch(
            event_ids=["a", "b", "c"],
            entity_keys=[1, 2, 3],
            event_time_texts=["2026-01-01T00:00:00.000Z"] * 3,
            matrix=np.zeros((3, 2), dtype=np.float32),
            primary_scores=PRIMARY,
        )
    )
    await run_until_drained(runner)
    return [orjson.loads(r.value) for r in publisher.records], metrics


async def test_regression_shadows_make_no_decisions() -> None:
    records, metrics = await shadow_records("regression")
    assert [r["score"] for r in records] == [30.0] * 3
    assert all("decision" not in r for r in records)
    sample = metrics.registry.get_sample_value
    labels = {"pipeline": "p", "model": "eta_lr"}
    assert sample("streamscore_shadow_agreement_ratio", labels) is None
    assert sample("streamscore_shadow_changed_decisions_total", labels) is None
    assert sample("streamscore_shadow_score_difference_sum", labels) == pytest.approx(
        float(np.abs(30.0 - PRIMARY).sum())
    )


async def test_classification_shadows_still_decide_at_one_half_by_default() -> None:
    records, metrics = await shadow_records("classification")
    assert [r["decision"] for r in records] == [True] * 3
    labels = {"pipeline": "p", "model": "eta_lr"}
    sample = metrics.registry.get_sample_value
    assert sample("streamscore_shadow_agreement_ratio", labels) == pytest.approx(2 / 3)
    assert sample("streamscore_shadow_changed_decisions_total", labels) == 1.0  # 0.2 < 0.5


def test_compare_shows_no_agreement_and_mae_rmse_for_regression(monkeypatch) -> None:
    predictions = [
        {"event_id": e, "score": s, "scored_at": "2026-01-01T00:00:00.010Z"}
        for e, s in zip("abc", PRIMARY.tolist(), strict=True)
    ]
    shadows = [
        {
            "event_id": e,
            "model": "eta_lr",
            "model_version": 4,
            "score": 30.0,
            "primary_score": s,
            "event_time": "2026-01-01T00:00:00.000Z",
            "scored_at": "2026-01-01T00:00:00.020Z",
        }  # fmt: skip
        for e, s in zip("abc", PRIMARY.tolist(), strict=True)
    ]
    comparison = compare_shadows(predictions, shadows)["eta_lr"]
    assert (comparison.compared, comparison.decided, comparison.agree) == (3, 0, 0)

    evaluation = RollingEvaluation(task="regression")
    evaluation.update_many("eta_gbr", [10.0, 20.0], [12.0, 17.0])
    pipeline = spec(task="regression")

    async def topics(kafka: object, names: list[str]) -> dict[str, list[dict[str, Any]]]:
        return {pipeline.output.topic: predictions, pipeline.shadow_topic: shadows}

    def labelled(spec: object, redis: object, basis: str = "served") -> dict:
        return evaluation.snapshot() if basis == "served" else {}

    monkeypatch.setattr(streams.cli.compare, "read_topics", topics)
    monkeypatch.setattr(streams.cli.compare, "labelled_evaluation", labelled)
    shadow_table, labelled_table = report(pipeline, None, None)  # type: ignore[arg-type]
    cells = {c.header: list(c.cells) for c in shadow_table.columns}
    assert cells["agreement"] == ["-"] and cells["changed"] == ["-"]
    assert [c.header for c in labelled_table.columns] == [
        "model", "basis", "labelled", "MAE", "RMSE",
    ]  # fmt: skip
    row = {c.header: list(c.cells)[0] for c in labelled_table.columns}
    assert (row["MAE"], row["RMSE"]) == ("2.5000", f"{np.sqrt((4 + 9) / 2):.4f}")
    assert "lower is better" in str(labelled_table.title)
