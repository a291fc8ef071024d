"""``streamscore health``: the latest monitoring windows and the features' freshness, in the
terminal, and with ``--out DIR`` as a markdown file with PNG plots.

Reads what the workers wrote, as ``compare`` does (no consumer group, nothing committed):
the tail of the monitoring topic (drift windows and any other monitoring records) and the
tail of the predictions topic (each prediction's ``feature_age_seconds``/``stale_views``).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from rich.table import Table
from rich.text import Text

from streams.errors import StreamscoreError
from streams.monitoring.health import HealthReport, ModelDrift
from streams.monitoring.reading import numeric_sections
from streams.runtime.connections import KafkaConnection
from streams.runtime.topics import topic_partitions
from streams.scoring.records import json_object
from streams.spec import PipelineSpec

#: Monitoring records read from the topic's end (the plots' history), predictions per partition.
MONITORING_TAIL = 500
PREDICTIONS_TAIL = 2000
STYLES = {"alert": "bold red", "warn": "yellow", "ok": "green"}


class HealthError(StreamscoreError):
    """``streamscore health`` cannot run as asked (no monitoring topic, no plotting library)."""


async def read_tail(kafka: KafkaConnection, topic: str, per_partition: int) -> list[dict[str, Any]]:
    """The last ``per_partition`` records of each partition of ``topic`` (JSON documents; a
    record that is not a JSON object is skipped). Empty when the topic does not exist."""
    count = await topic_partitions(kafka, topic)
    if not count:
        return []
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    await kafka.start(consumer)
    documents: list[dict[str, Any]] = []
    try:
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - per_partition))
        pending = {tp for tp in partitions if ends[tp] > starts[tp]}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in fetched.items():
                for record in records:
                    if record.offset < ends[tp] and record.value:
                        document = json_object(record.value)
                        if document is not None:
                            documents.append(document)
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return documents


def read_health(spec: PipelineSpec, kafka: KafkaConnection) -> HealthReport:
    async def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        monitoring = await read_tail(kafka, spec.monitoring_topic, MONITORING_TAIL)
        predictions = await read_tail(kafka, spec.output.topic, PREDICTIONS_TAIL)
        return monitoring, predictions

    monitoring, predictions = asyncio.run(read())
    return HealthReport.build(monitoring, predictions)


def _clock(stamp: Any) -> str:
    """'2026-11-22T23:00:10.090000Z' -> '23:00:10' (a window's end, in a header)."""
    text = str(stamp)
    return text[11:19] if len(text) >= 19 else text or "?"


def _psi(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3f}"


def _figure(value: float | None) -> str:
    """Any other number: integers as such, others to 4 significant digits."""
    if value is None or math.isnan(value):
        return "-"
    if value.is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"


def _table(title: str) -> Table:
    # As wide as its title: a title never wraps (the command widens the console to fit).
    return Table(title=title, min_width=len(title) + 4)


def _age(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def drift_table(drift: ModelDrift, last: int) -> Table:
    windows = drift.windows[-last:]
    thresholds = drift.thresholds
    table = _table(
        f"drift of {drift.model}: PSI per column, last {len(windows)} of"
        f" {len(drift.windows)} windows (warn {thresholds.get('warn', '?')},"
        f" alert {thresholds.get('alert', '?')})"
    )
    table.add_column("column")
    for record in windows:
        version = record.get("model_version")
        table.add_column(
            f"{_clock(record.get('window_end'))}\nv{version}, {record.get('events', 0):,} ev",
            justify="right",
        )
    table.add_column("level")
    for column, series in [*sorted(drift.psi.items()), ("score", drift.score)]:
        values = series[-last:]
        cells = [Text(_psi(v), style=STYLES.get(drift.level(v), "")) for v in values]
        latest = drift.level(values[-1] if values else None)
        table.add_row(column, *cells, Text(latest, style=STYLES.get(latest, "")))
    return table


def section_tables(drift: ModelDrift, last: int) -> list[Table]:
    """Any other numeric section of the windows, the same layout (rows: its keys)."""
    windows = drift.windows[-last:]
    tables = []
    for section, keys in sorted(drift.sections(last).items()):
        table = _table(f"{section} of {drift.model}, last {len(windows)} windows")
        table.add_column("key")
        for record in windows:
            table.add_column(_clock(record.get("window_end")), justify="right")
        for key, values in sorted(keys.items()):
            table.add_row(key, *(_figure(v) for v in values))
        tables.append(table)
    return tables


def kind_tables(report: HealthReport) -> list[Table]:
    """The latest record of each other kind on the monitoring topic, its numbers."""
    tables = []
    for kind, record in sorted(report.other_kinds.items()):
        table = _table(f"monitoring record '{kind}' (latest)")
        table.add_column("section")
        table.add_column("key")
        table.add_column("value", justify="right")
        for section, values in sorted(numeric_sections(record).items()):
            for key, value in sorted(values.items()):
                table.add_row(section, key, _figure(value))
        tables.append(table)
    return tables


def freshness_table(report: HealthReport) -> Table:
    share = report.stale_share
    stale = "no max_age_seconds set" if share is None else f"{share:.1%} with a stale view"
    table = _table(
        f"feature freshness: age at event time over the last {report.predictions:,}"
        f" predictions ({stale})"
    )
    for name in ("view", "with a row", "no row", "p50", "p95", "max"):
        table.add_column(name, justify="left" if name == "view" else "right")
    for view in report.freshness:
        table.add_row(
            view.view, f"{view.predictions:,}", f"{view.missing:,}",
            _age(view.p50), _age(view.p95), _age(view.max),
        )  # fmt: skip
    return table


def tables(report: HealthReport, last: int) -> list[Table]:
    out: list[Table] = []
    for drift in report.models.values():
        out.append(drift_table(drift, last))
        out.extend(section_tables(drift, last))
    out.extend(kind_tables(report))
    if report.predictions:
        out.append(freshness_table(report))
    return out


def markdown(spec: PipelineSpec, report: HealthReport, last: int, plots: list[str]) -> str:
    """The same content as the terminal's, as markdown, with the plots' files."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"# Health of pipeline `{spec.name}`",
        "",
        f"Written {now} from the last {report.records:,} records of `{spec.monitoring_topic}`"
        f" and the last {report.predictions:,} predictions of `{spec.output.topic}`.",
        "",
    ]
    for drift in report.models.values():
        windows = drift.windows[-last:]
        heads = [f"{_clock(r.get('window_end'))} v{r.get('model_version')}" for r in windows]
        lines += [
            f"## Drift of `{drift.model}` (PSI; warn {drift.thresholds.get('warn', '?')},"
            f" alert {drift.thresholds.get('alert', '?')})",
            "",
            "| column | " + " | ".join(heads) + " | level |",
            "| --- | " + " | ".join("---:" for _ in heads) + " | --- |",
        ]
        for column, series in [*sorted(drift.psi.items()), ("score", drift.score)]:
            values = series[-last:]
            latest = drift.level(values[-1] if values else None)
            cells = " | ".join(_psi(v) for v in values)
            lines.append(f"| {column} | {cells} | {latest} |")
        lines.append("")
        for section, keys in sorted(drift.sections(last).items()):
            lines += [
                f"### {section}",
                "",
                "| key | " + " | ".join(heads) + " |",
                "| --- | " + " | ".join("---:" for _ in heads) + " |",
            ]
            for key, values in sorted(keys.items()):
                lines.append(f"| {key} | " + " | ".join(_figure(v) for v in values) + " |")
            lines.append("")
    for kind, record in sorted(report.other_kinds.items()):
        lines += [f"## Monitoring record `{kind}` (latest)", "", "| section | key | value |"]
        lines.append("| --- | --- | ---: |")
        for section, numbers in sorted(numeric_sections(record).items()):
            lines += [f"| {section} | {k} | {_figure(v)} |" for k, v in sorted(numbers.items())]
        lines.append("")
    if report.predictions:
        share = report.stale_share
        lines += [
            "## Feature freshness (age at event time)",
            "",
            "Stale share: " + ("no `max_age_seconds` set" if share is None else f"{share:.1%}"),
            "",
            "| view | with a row | no row | p50 | p95 | max |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for v in report.freshness:
            lines.append(
                f"| {v.view} | {v.predictions:,} | {v.missing:,} | {_age(v.p50)} |"
                f" {_age(v.p95)} | {_age(v.max)} |"
            )
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write(spec: PipelineSpec, report: HealthReport, last: int, out: Path) -> list[Path]:
    """health.md and the PNG plots into ``out``; returns the files written."""
    from streams.cli.health_plots import plot_drift  # matplotlib: only with --out

    out.mkdir(parents=True, exist_ok=True)
    plots = plot_drift(report, out)
    path = out / "health.md"
    path.write_text(markdown(spec, report, last, [p.name for p in plots]))
    return [path, *plots]
