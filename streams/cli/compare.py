"""``streamscore compare``: how each shadow compares with the primary, and how every model
does on labelled events.

Reads the predictions and shadow topics (as any downstream consumer can) and joins them by
event id; reads the learner's rolling evaluations from its checkpoint in Redis: every
model's on the scores it published (``served``, the figure to compare and promote on), and
the online model's own progressive figure (``as learned``: what it would have scored with no
serving staleness; never what it served).

A classification pipeline shows accuracy, log loss and ROC AUC, and each shadow's decision
agreement with the primary; a regression pipeline shows MAE and RMSE (lower is better) and
no agreement (a regressor makes no decision: the |diff| columns compare the scores).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from rich.table import Table

from models.evaluation import RollingEvaluation
from streams.runtime.connections import KafkaConnection, RedisConnection
from streams.scoring.prediction_store import Keys
from streams.scoring.validation import parse_timestamp
from streams.spec import PipelineSpec


@dataclass
class ShadowComparison:
    model: str
    versions: set[int | str] = field(default_factory=set)
    score_diffs: list[float] = field(default_factory=list)
    agree: int = 0
    decided: int = 0  # pairs where both records carry a decision (none under regression)
    latency: list[float] = field(default_factory=list)  # shadow: event time -> scored
    primary_latency: list[float] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return len(self.score_diffs)


async def read_topics(
    kafka: KafkaConnection, topics: list[str], idle_seconds: float = 2.0
) -> dict[str, list[dict[str, Any]]]:
    """Every record of ``topics`` from the beginning, until none arrives for ``idle_seconds``."""
    consumer = kafka.consumer(*topics, group_id=None, auto_offset_reset="earliest")
    await kafka.start(consumer)
    records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_seconds:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for partition, batch in batches.items():
                records[partition.topic].extend(orjson.loads(r.value) for r in batch if r.value)
                idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


def compare_shadows(
    predictions: list[dict[str, Any]], shadow_records: list[dict[str, Any]]
) -> dict[str, ShadowComparison]:
    primary = {p["event_id"]: p for p in predictions}
    out: dict[str, ShadowComparison] = {}
    for record in shadow_records:
        match = primary.get(record["event_id"])
        if match is None:
            continue
        comparison = out.setdefault(record["model"], ShadowComparison(record["model"]))
        comparison.versions.add(record["model_version"])
        comparison.score_diffs.append(abs(record["score"] - match["score"]))
        if "decision" in record:  # the primary's too, or the shadow's threshold default
            comparison.decided += 1
            comparison.agree += record["decision"] == match.get("decision", record["decision"])
        event_time = parse_timestamp(record["event_time"])
        comparison.latency.append(parse_timestamp(record["scored_at"]) - event_time)
        comparison.primary_latency.append(parse_timestamp(match["scored_at"]) - event_time)
    return out


def labelled_evaluation(
    spec: PipelineSpec, redis: RedisConnection, basis: str = "served"
) -> dict[str, dict[str, float]]:
    """The learner's rolling evaluation per model (empty without an online model/labels):
    ``served`` (every model, on the scores it published) or ``as_learned`` (the online
    model's progressive validation). Raises ``EvaluationStateError`` when the stored bytes
    are not an evaluation."""
    keys = Keys(spec.name)
    key = keys.evaluation if basis == "served" else keys.as_learned_evaluation
    client = redis.client()
    try:
        data: bytes | None = client.get(key)  # type: ignore[assignment]
    finally:
        client.close()
    if data is None:
        return {}
    return RollingEvaluation.from_bytes(data, task=spec.task).snapshot()


#: The labelled table's metric columns per task: (header, snapshot key).
METRIC_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "classification": (("accuracy", "accuracy"), ("log loss", "log_loss"), ("ROC AUC", "roc_auc")),
    "regression": (("MAE", "mae"), ("RMSE", "rmse")),
}


def report(spec: PipelineSpec, kafka: KafkaConnection, redis: RedisConnection) -> list[Table]:
    topics = asyncio.run(read_topics(kafka, [spec.output.topic, spec.shadow_topic]))
    comparisons = compare_shadows(topics[spec.output.topic], topics[spec.shadow_topic])
    n = len(topics[spec.output.topic])
    shadows = Table(title=f"shadows vs primary {spec.model.name} ({n:,} predictions)")
    for column in (
        "shadow",
        "versions",
        "compared",
        "agreement",
        "changed",
        "|diff| p50",
        "|diff| p99",
        "latency p50 (primary)",
    ):
        _add_column(shadows, column, [c.model for c in comparisons.values()])
    for c in comparisons.values():
        diffs = np.asarray(c.score_diffs)
        decided = c.decided > 0
        shadows.add_row(
            c.model,
            versions_text(c.versions),
            f"{c.compared:,}",
            f"{c.agree / c.decided:.2%}" if decided else "-",
            f"{c.decided - c.agree:,}" if decided else "-",
            f"{np.percentile(diffs, 50):.4f}",
            f"{np.percentile(diffs, 99):.4f}",
            f"{np.median(c.latency) * 1000:.1f} ms ({np.median(c.primary_latency) * 1000:.1f} ms)",
        )
    rows = [(m, "served", v) for m, v in labelled_evaluation(spec, redis).items()]
    as_learned = labelled_evaluation(spec, redis, "as_learned")
    rows += [(m, "as learned", v) for m, v in as_learned.items()]
    metrics = METRIC_COLUMNS[spec.task]
    lower = "; MAE and RMSE: lower is better" if spec.task == "regression" else ""
    labelled = Table(
        title="rolling evaluation on labelled events (last window per model; compare on"
        f" 'served': the scores each model published{lower})"
    )
    headers = ("model", "basis", "labelled", *(header for header, _ in metrics))
    for column in headers:
        _add_column(labelled, column, [model for model, _, _ in rows])
    for model, basis, values in rows:
        labelled.add_row(
            model,
            basis,
            f"{values.get('count', 0):,.0f}",
            *(f"{values.get(key, float('nan')):.4f}" for _, key in metrics),
        )
    if spec.task == "regression":
        shadows.caption = "regression: no decisions, so no agreement; |diff| compares scores"
    return [shadows, labelled]


def versions_text(versions: set[Any]) -> str:
    """The versions a shadow scored with, short: the online model has a new one per
    checkpoint, so past a few they are shown as a range and a count.

    >>> versions_text({2, 1}), versions_text(set(range(120)))
    ('1,2', '0..119 (120 versions)')
    """
    ordered = sorted(
        versions, key=lambda v: (not isinstance(v, int), v if isinstance(v, int) else str(v))
    )
    if len(ordered) <= 4:
        return ",".join(map(str, ordered))
    return f"{ordered[0]}..{ordered[-1]} ({len(ordered)} versions)"


def _add_column(table: Table, column: str, names: list[str]) -> None:
    """The first column holds model names: never cut (in 80 columns or a pipe, rich would
    shorten them to a shared prefix and an ellipsis); the other columns wrap instead."""
    if not table.columns:
        width = max([len(column), *map(len, names)])
        table.add_column(column, justify="left", no_wrap=True, min_width=width)
    else:
        table.add_column(column, justify="right", overflow="fold")
