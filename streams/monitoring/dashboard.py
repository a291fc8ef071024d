"""The model-health Grafana dashboard, as data: rows of panels, each a title, a description
and its PromQL. ``python -m streams.monitoring.dashboard`` prints the dashboard's JSON;
monitoring/grafana/dashboards/model_health.json is that output (a unit test keeps them
equal). To add a panel, add a ``Panel`` to a row of ``ROWS`` (or a new ``Row``) and
regenerate:

    python -m streams.monitoring.dashboard > monitoring/grafana/dashboards/model_health.json

Panels are laid out left to right in their row, wrapping at Grafana's 24 columns. Every
streamscore selector must filter on ``pipeline=~"$pipeline"``, and every expression must
return data under tests/integration/test_prometheus.py's load (tests/unit/
test_dashboards_static.py checks names and labels against streams/metrics.py).

>>> board = dashboard()
>>> board["uid"], [p["title"] for p in board["panels"] if p["type"] == "row"][0]
('streamscore-model-health', 'Drift against the training reference')
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
PIPELINE = 'pipeline=~"$pipeline"'
RATE = "[$__rate_interval]"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = "__auto"


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    kind: Literal["timeseries", "stat", "bargauge"] = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    stacked: bool = False
    # stat / bargauge colour steps: (value, colour) above the base green
    steps: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def _psi_threshold(name: str) -> Target:
    """The spec's threshold (the recording rule rendered from ``monitoring.drift``)."""
    return Target(f"max(pipeline:streamscore_drift_psi:{name}_threshold{{{PIPELINE}}})", name)


ROWS: list[Row] = [
    Row(
        "Drift against the training reference",
        [
            Panel(
                "Columns above the alert threshold",
                "Input columns whose PSI in the last closed window is above the spec's"
                " monitoring.drift.alert (StreamscoreFeatureDrift's condition).",
                (
                    Target(
                        "count(max by (pipeline, model, column)"
                        f" (streamscore_drift_psi{{{PIPELINE}}}) > on (pipeline) group_left ()"
                        " pipeline:streamscore_drift_psi:alert_threshold) or vector(0)"
                    ),
                ),
                kind="stat",
                width=6,
                height=4,
                steps=((1, "red"),),
            ),
            Panel(
                "Highest column PSI, last window",
                "The most drifted input column's PSI in the last closed window, any model.",
                (Target(f"max(streamscore_drift_psi{{{PIPELINE}}})"),),
                kind="stat",
                width=6,
                height=4,
                steps=((0.1, "orange"), (0.25, "red")),
            ),
            Panel(
                "Score PSI, last window",
                "The primary's score distribution against its scores on the held-out training"
                " rows (StreamscoreScoreDrift above the alert threshold).",
                (Target(f"max(streamscore_drift_score_psi{{{PIPELINE}}})"),),
                kind="stat",
                width=6,
                height=4,
                steps=((0.1, "orange"), (0.25, "red")),
            ),
            Panel(
                "Drift windows closed (/min)",
                "Windows of monitoring.window closed per minute, all workers; 0 with traffic"
                " means no reference profile (see streamscore_drift_reference_available).",
                (Target(f"sum(rate(streamscore_drift_windows_total{{{PIPELINE}}}{RATE})) * 60"),),
                kind="stat",
                width=6,
                height=4,
            ),
            Panel(
                "PSI by input column",
                "Population stability index of each model input column in the last closed"
                " window (max across workers), with the spec's warn and alert thresholds.",
                (
                    Target(
                        f"max by (model, column) (streamscore_drift_psi{{{PIPELINE}}})",
                        "{{model}} {{column}}",
                    ),
                    _psi_threshold("warn"),
                    _psi_threshold("alert"),
                ),
                width=16,
            ),
            Panel(
                "PSI by column, now",
                "Each column's PSI in the last closed window, highest first.",
                (
                    Target(
                        f"sort_desc(max by (column) (streamscore_drift_psi{{{PIPELINE}}}))",
                        "{{column}}",
                    ),
                ),
                kind="bargauge",
                width=8,
                steps=((0.1, "orange"), (0.25, "red")),
            ),
            Panel(
                "Score PSI",
                "PSI of the primary's scores per closed window, with the thresholds.",
                (
                    Target(
                        f"max by (model) (streamscore_drift_score_psi{{{PIPELINE}}})",
                        "{{model}}",
                    ),
                    _psi_threshold("warn"),
                    _psi_threshold("alert"),
                ),
                width=24,
            ),
        ],
    ),
    Row(
        "Feature freshness",
        [
            Panel(
                "Feature age at event time by view",
                "Event time minus the served row's timestamp, p50, p95 and p99 per feature"
                " view (streamscore_feature_age_seconds; rows the store lacked are not"
                " observed). Compare with features.max_age_seconds.",
                tuple(
                    Target(
                        f"histogram_quantile({q}, sum by (le, view)"
                        f" (rate(streamscore_feature_age_seconds_bucket{{{PIPELINE}}}{RATE})))",
                        f"{{{{view}}}} p{round(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ),
                unit="s",
            ),
            Panel(
                "Defaulted features by reason",
                "Feature values replaced by the spec's default per second: missing (the store"
                " had no row) or stale (older than features.max_age_seconds).",
                (
                    Target(
                        f"sum by (reason) (rate(streamscore_defaulted_features_total{{{PIPELINE}}}"
                        f"{RATE}))",
                        "{{reason}}",
                    ),
                ),
                stacked=True,
            ),
        ],
    ),
    Row(
        "Dead letters",
        [
            Panel(
                "Dead letters by reason",
                "Input events that became dead letters per second, by stage and reason.",
                (
                    Target(
                        f"sum by (stage, reason) (rate(streamscore_dead_letters_total{{{PIPELINE}}}"
                        f"{RATE}))",
                        "{{stage}}/{{reason}}",
                    ),
                ),
                stacked=True,
            ),
            Panel(
                "Dead-letter share of input",
                "Dead letters over input events (the dead-letter alert's ratio, per pipeline).",
                (
                    Target(
                        f"sum by (pipeline) (rate(streamscore_dead_letters_total{{{PIPELINE}}}"
                        f"{RATE})) / sum by (pipeline) (rate(streamscore_events_total"
                        f"{{{PIPELINE}}}{RATE}))",
                        "{{pipeline}}",
                    ),
                ),
                unit="percentunit",
            ),
        ],
    ),
]


def _target(target: Target, ref: str, instant: bool) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": target.expr,
        "legendFormat": target.legend,
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }


def _steps(panel: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": colour, "value": value} for value, colour in panel.steps]
    return {"mode": "absolute", "steps": steps}


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    instant = panel.kind == "bargauge"
    out: dict[str, Any] = {
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "targets": [_target(t, chr(ord("A") + i), instant) for i, t in enumerate(panel.targets)],
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "id": panel_id,
    }
    if panel.kind == "timeseries":
        custom = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }  # fmt: skip
        out["fieldConfig"] = {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []}
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
        return out
    defaults = {"unit": panel.unit, "thresholds": _steps(panel), "color": {"mode": "thresholds"}}
    out["fieldConfig"] = {"defaults": defaults, "overrides": []}
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "stat":
        out["options"] = {
            "reduceOptions": reduce, "colorMode": "value", "graphMode": "area",
            "justifyMode": "auto", "textMode": "auto",
        }  # fmt: skip
    else:
        out["options"] = {
            "reduceOptions": reduce, "orientation": "horizontal", "displayMode": "gradient",
            "showUnfilled": True,
        }  # fmt: skip
    return out


def layout(rows: list[Row]) -> list[dict[str, Any]]:
    """Rows and their panels with ids and grid positions: left to right, wrapping at 24."""
    out: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        out.append(
            {"type": "row", "title": row.title, "collapsed": False,
             "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [], "id": len(out) + 1}
        )  # fmt: skip
        y, x, tallest = y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                y, x, tallest = y + tallest, 0, 0
            out.append(_panel(panel, len(out) + 1, x, y))
            x += panel.width
            tallest = max(tallest, panel.height)
        y += tallest
    return out


def dashboard(rows: list[Row] | None = None) -> dict[str, Any]:
    return {
        "uid": "streamscore-model-health",
        "title": "streamscore / Model health",
        "description": "Drift of the served inputs and scores against the training reference,"
        " feature freshness and dead letters. Generated by"
        " streams/monitoring/dashboard.py: edit it there, not here.",
        "tags": ["streamscore"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "schemaVersion": 39,
        "version": 1,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },  # fmt: skip
        "links": [
            {
                "type": "dashboards",
                "tags": ["streamscore"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "title": "streamscore",
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],  # fmt: skip
        "templating": {
            "list": [
                {
                    "name": "pipeline",
                    "label": "Pipeline",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": "label_values(streamscore_events_total, pipeline)",
                    "query": {
                        "query": "label_values(streamscore_events_total, pipeline)",
                        "refId": "PrometheusVariableQueryEditor-VariableQuery",
                    },
                    "refresh": 2,
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "current": {},
                    "sort": 1,
                    "hide": 0,
                    "options": [],
                    "regex": "",
                }
            ]
        },  # fmt: skip
        "panels": layout(ROWS if rows is None else rows),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
