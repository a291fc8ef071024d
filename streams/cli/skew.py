"""``streamscore skew``: what the online/offline skew check has found, from Redis.

The learner records every check (``streams.monitoring.skew.SkewLog``): counts since the
check began and its latest mismatches. This reads them back, with one row per compared
feature (every model input column that is a feature ref), and prints them as tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from streams.monitoring.skew import SkewColumns, SkewReport
from streams.runtime.connections import RedisConnection
from streams.scoring.prediction_store import Keys
from streams.spec import PipelineSpec


def read_report(spec: PipelineSpec, redis: RedisConnection, examples: int) -> SkewReport:
    keys = Keys(spec.name)
    client = redis.client()
    try:
        totals: dict[bytes, bytes] = client.hgetall(keys.skew_totals)  # type: ignore[assignment]
        recent: list[bytes] = client.lrange(keys.skew_recent, 0, max(examples, 1) - 1)  # type: ignore[assignment]
    finally:
        client.close()
    return SkewReport.parse(totals, recent[:examples], SkewColumns.of(spec).names)


def summary(spec: PipelineSpec, report: SkewReport) -> str:
    """One line above the tables: how much was checked, when, with which settings."""
    skew = spec.monitoring.skew
    since = f" from {_time(report.first_at)} to {_time(report.last_at)}" if report.checked else ""
    return (
        f"online/offline skew of {spec.name}: {report.checked:,} predictions checked{since}"
        f" (sample rate {skew.sample_rate:g}, tolerance {skew.tolerance:g})"
    )


def tables(spec: PipelineSpec, report: SkewReport) -> list[Table]:
    """Per compared feature; then the latest mismatches."""
    features = Table(title="per feature")
    for column in ("feature", "mismatched", "share", "max |online - offline|"):
        _add_column(features, column, [f.feature for f in report.features])
    for f in report.features:
        share = f"{f.mismatched / report.checked:.2%}" if report.checked else "-"
        features.add_row(f.feature, f"{f.mismatched:,}", share, f"{f.max_abs_difference:.6g}")
    features.caption = (
        "compared: the model input columns that are a feature ref (event fields and one-hot"
        " columns are not from Feast); an offline value Feast lacks is the spec's default"
    )
    examples = Table(title="latest mismatches (newest first)")
    headers = ("event id", "entity key", "event time", "feature", "online", "offline", "|diff|")
    for column in headers:
        _add_column(examples, column, [str(e.get("event_id")) for e in report.examples])
    for e in report.examples:
        offline = _number(e.get("offline")) + (" (default)" if e.get("offline_defaulted") else "")
        examples.add_row(
            str(e.get("event_id")),
            str(e.get("entity_key")),
            _time(e.get("event_time")),
            str(e.get("feature")),
            _number(e.get("online")),
            offline,
            _number(e.get("difference")),
        )
    return [features, examples]


def _time(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    try:
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "-"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.6g}"


def _add_column(table: Table, column: str, names: list[str]) -> None:
    """The first column (feature names, event ids) is never cut; the others wrap."""
    if not table.columns:
        width = max([len(column), *map(len, names)])
        table.add_column(column, justify="left", no_wrap=True, min_width=width)
    else:
        table.add_column(column, justify="right", overflow="fold")
