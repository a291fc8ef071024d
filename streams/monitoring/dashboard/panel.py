"""What a dashboard panel is, as data: a title, a one-line description and its PromQL.

>>> Panel("Canary version", "The version serving the canary.", (Target("x"),)).kind
'timeseries'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Every streamscore selector filters on it (tests/unit/test_dashboards_static.py checks).
PIPELINE = 'pipeline=~"$pipeline"'
RATE = "[$__rate_interval]"
#: ``and`` this to keep the series of each pipeline's primary model only (its champion):
#: the labelled metrics are exported for every model (shadows, online, arms).
PRIMARY = f'and on (pipeline, model) streamscore_model_info{{{PIPELINE}, role="primary"}}'


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
    # stat / bargauge colour steps: (value, colour) above the base colour
    steps: tuple[tuple[float, str], ...] = ()
    base_colour: str = "green"
    # stat: "auto" shows the value; "name" the series' legend (a version in a label)
    text_mode: Literal["auto", "name"] = "auto"


@dataclass(frozen=True)
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)
