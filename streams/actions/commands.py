"""What ``streamscore models promote --if-better``, ``rollback`` and ``history`` do around the
decision: read the evidence from Redis, record actions on the actions topic, render tables.

The commands themselves are thin (``models/cli.py``); the decision is
``streams.actions.decision.decide_promotion``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rich import box
from rich.markup import escape
from rich.table import Table

from streams.actions.decision import Decision, decide_promotion
from streams.actions.evidence import read_evidence, read_inference
from streams.actions.record import publish_actions, read_actions
from streams.errors import StreamscoreError, Unreachable
from streams.runtime.connections import KafkaConnection, RedisConnection
from streams.scoring.canary import arm
from streams.settings import Settings
from streams.spec import PipelineSpec


class ActionSink(Protocol):
    """Where the commands record actions: the spec's actions topic (tests swap in a list)."""

    def check(self) -> None:
        """Raise if records could not be written (before anything changes)."""

    def publish(self, spec: PipelineSpec, records: list[dict[str, Any]]) -> None: ...


@dataclass
class KafkaActionSink:
    settings: Settings

    def check(self) -> None:
        from streams.runtime.reach import check_kafka

        asyncio.run(check_kafka(self.settings))

    def publish(self, spec: PipelineSpec, records: list[dict[str, Any]]) -> None:
        from streams.runtime.reach import BROKER_NAME, KAFKA

        settings = self.settings
        kafka = KafkaConnection.from_settings(settings)
        replication = settings.topic_replication_factor

        async def publish() -> None:
            async with asyncio.timeout(settings.kafka_connect_timeout_seconds):
                await publish_actions(kafka, spec.actions_topic, records, replication)

        try:
            asyncio.run(publish())
        except TimeoutError as exc:
            msg = (
                f"actions: recording on {spec.actions_topic} took over"
                f" {settings.kafka_connect_timeout_seconds:g} s"
            )
            raise Unreachable(BROKER_NAME, settings.kafka_bootstrap_servers, KAFKA, msg) from exc


def decide(
    settings: Settings, spec: PipelineSpec, name: str, champion: int, candidate: int
) -> Decision:
    """Read ``spec``'s evidence from Redis and decide on ``candidate`` against ``champion``
    (versions of ``name``)."""
    from streams.runtime.reach import check_redis

    check_redis(settings)
    client = RedisConnection.from_settings(settings).client()
    try:
        events = read_evidence(client, spec.name)
        inference = read_inference(client, spec.name)
    finally:
        client.close()
    threshold = spec.model.decision_threshold
    return decide_promotion(
        events, inference, champion=arm(name, champion), candidate=arm(name, candidate),
        policy=spec.actions.promote, task=spec.task, threshold=threshold,
    )  # fmt: skip


def history(settings: Settings, spec: PipelineSpec, name: str | None) -> list[dict[str, Any]]:
    """The actions recorded for ``spec`` (of model ``name`` only, if given), oldest first."""
    from streams.runtime.reach import check_kafka

    asyncio.run(check_kafka(settings))
    kafka = KafkaConnection.from_settings(settings)
    try:
        records = asyncio.run(read_actions(kafka, spec.actions_topic))
    except TimeoutError as exc:
        msg = f"actions: reading {spec.actions_topic} took over 30 s"
        raise StreamscoreError(msg) from exc
    return [r for r in records if name is None or r.get("model") == name]


def decision_table(decision: Decision, pipeline: str) -> Table:
    """The evidence, one row per figure, a column per arm."""
    c = decision.comparison
    policy = decision.policy
    verdict = "[green]promote[/green]" if decision.promote else "[red]refuse[/red]"
    table = Table(
        title=f"{escape(decision.candidate)} against {escape(decision.champion)}"
        f" ({escape(pipeline)}): {verdict}",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("evidence", no_wrap=True)
    table.add_column(f"champion {escape(decision.champion)}", justify="right", no_wrap=True)
    table.add_column(f"candidate {escape(decision.candidate)}", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    n = c.n if c else 0
    enough = n >= policy.min_labels
    table.add_row("paired labels", str(n), str(n), _mark(enough, f">= {policy.min_labels}"))
    if c is not None:
        table.add_row(c.metric, f"{c.champion:.4g}", f"{c.candidate:.4g}", "")
        interval = f"[{c.low:+.4g}, {c.high:+.4g}]"
        table.add_row(
            f"gain, {c.confidence:.0%} interval ({c.method})",
            "",
            f"{c.gain:+.4g} {interval}",
            _mark(c.low > policy.margin, f"lower bound > margin {policy.margin:g}"),
        )
    for guard in decision.guards:
        champion, candidate = guard.champion, guard.candidate
        if guard.name == "latency":
            shown = [_micros(champion), _micros(candidate)]
            label = "inference per event"
        else:
            shown = [_share(champion), _share(candidate)]
            label = "unserved share"
        table.add_row(f"guard {guard.name}: {label}", *shown, _mark(guard.ok, ""))
    return table


def _mark(ok: bool, rule: str) -> str:
    sign = "[green]✓[/green]" if ok else "[red]✗[/red]"
    return f"{sign} {escape(rule)}".rstrip()


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _micros(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e6:.1f} µs"


def history_table(records: Sequence[dict[str, Any]], title: str) -> Table:
    table = Table(title=escape(title), box=box.SIMPLE_HEAD)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("alias", no_wrap=True)
    table.add_column("from → to", no_wrap=True)
    table.add_column("decided by", no_wrap=True)
    table.add_column("evidence / reasons", overflow="fold", min_width=30)
    for record in records:
        table.add_row(
            escape(str(record.get("at", "?"))[:19].replace("T", " ")),
            escape(str(record.get("action", "?"))),
            escape(str(record.get("model", "?"))),
            escape(str(record.get("alias", "?"))),
            f"{_version(record.get('from_version'))} → {_version(record.get('to_version'))}",
            escape(str(record.get("decided_by", "?"))),
            escape(_summary(record)),
        )
    return table


def _version(value: object) -> str:
    return "-" if value is None else str(value)


def _summary(record: dict[str, Any]) -> str:
    parts = []
    evidence = record.get("evidence")
    if isinstance(evidence, dict) and evidence.get("metric"):
        interval = evidence.get("interval")  # none in a guard's rollback: a point estimate
        shown = f" [{_signed(interval[0])}, {_signed(interval[1])}]" if interval else ""
        parts.append(
            f"{evidence['metric']} gain {_signed(evidence.get('gain'))}{shown}"
            f" on {evidence.get('labels')} labels"
        )
    details = record.get("details")
    lineage = details.get("lineage") if isinstance(details, dict) else None
    if isinstance(lineage, dict):  # a retrain_finished record
        parts.append(
            f"{lineage.get('rows')} rows of {lineage.get('topic')}"
            f" (sha256 {str(lineage.get('sha256'))[:12]}), held out: {lineage.get('metrics')}"
        )
    reasons = record.get("reasons")
    if isinstance(reasons, list):
        parts += [str(reason) for reason in reasons]
    return "; ".join(parts) or "-"


def _signed(value: object) -> str:
    return f"{value:+.4g}" if isinstance(value, int | float) else "?"
