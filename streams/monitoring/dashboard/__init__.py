"""The model-health Grafana dashboard, as data: rows of panels, each a title, a one-line
description and its PromQL (``panel``). ``inputs`` holds the rows about what the models
are fed, ``models`` those about how they do; ``grafana`` turns them into Grafana's JSON.
``python -m streams.monitoring.dashboard`` prints it; monitoring/grafana/dashboards/
model_health.json is that output (a unit test keeps them equal). To add a panel, add a
``Panel`` to a row (or a new ``Row`` to ``ROWS``) and regenerate:

    python -m streams.monitoring.dashboard > monitoring/grafana/dashboards/model_health.json

Panels are laid out left to right in their row, wrapping at Grafana's 24 columns. Every
streamscore selector must filter on ``pipeline=~"$pipeline"``, and every expression must
return data under tests/integration/test_prometheus.py's load, or be listed there with the
event its series wait for (tests/unit/test_dashboards_static.py checks names and labels
against streams/metrics.py).

>>> board = dashboard()
>>> board["uid"], [p["title"] for p in board["panels"] if p["type"] == "row"][0]
('streamscore-model-health', 'Drift against the training reference')
"""

from __future__ import annotations

from typing import Any

from streams.monitoring.dashboard import grafana
from streams.monitoring.dashboard.grafana import layout
from streams.monitoring.dashboard.inputs import (
    DATA_QUALITY,
    DEAD_LETTERS,
    DRIFT,
    FRESHNESS,
    SKEW,
)
from streams.monitoring.dashboard.models import MODELS_AND_ACTIONS, PERFORMANCE, SLICES
from streams.monitoring.dashboard.panel import Panel, Row, Target

__all__ = ["ROWS", "Panel", "Row", "Target", "dashboard", "layout", "render"]

ROWS: list[Row] = [
    DRIFT,
    FRESHNESS,
    DATA_QUALITY,
    DEAD_LETTERS,
    SKEW,
    PERFORMANCE,
    SLICES,
    MODELS_AND_ACTIONS,
]


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON as a dict."""
    return grafana.dashboard(ROWS)


def render() -> str:
    return grafana.render(ROWS)
