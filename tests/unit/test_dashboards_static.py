"""Static checks of the Grafana dashboards and the Prometheus rules against streams/metrics.py.

Every PromQL expression (dashboard panels, recording and alerting rules) may only use the
metric names and label names that ``streams.metrics.Metrics`` declares, plus ``up``, the
process collector's ``process_*`` families and the recording rules of
monitoring/prometheus/rules/streamscore.yml. tests/integration/test_prometheus.py then runs
every one of these expressions against a real Prometheus; the helpers that list them live
here and are imported there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from streams.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "monitoring" / "grafana" / "dashboards"
DATASOURCES = ROOT / "monitoring" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RULES = ROOT / "monitoring" / "prometheus" / "rules" / "streamscore.yml"
RULES_TEST = ROOT / "monitoring" / "prometheus" / "rules" / "streamscore_test.yml"
#: Every promtool unit test file of RULES: the volume alerts' tests hold days of samples and
#: are evaluated every 15 minutes, the others every minute (one interval per file).
RULES_TESTS = (RULES_TEST, RULES.with_name("streamscore_volume_test.yml"))
DATASOURCE_UID = "prometheus"
#: Labels Prometheus attaches to every scraped series, and the histogram bucket label.
TARGET_LABELS = frozenset({"job", "instance"})


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from."""

    source: str
    expr: str
    kind: Literal["panel", "record", "alert"]


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_queries() -> list[Query]:
    queries = []
    for path in dashboard_files():
        for panel in panels(load_dashboard(path)):
            for target in panel.get("targets", []):
                source = f"{path.name}: {panel.get('title')} [{target.get('refId')}]"
                queries.append(Query(source, target.get("expr", ""), "panel"))
    return queries


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rule_queries() -> list[Query]:
    queries = []
    for rule in rules():
        kind: Literal["record", "alert"] = "record" if "record" in rule else "alert"
        queries.append(Query(f"{RULES.name}: {rule[kind]}", rule["expr"], kind))
    return queries


def all_queries() -> list[Query]:
    return dashboard_queries() + rule_queries()


def recording_rule_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    """The query strings of the dashboard's template variables."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        found.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return found


# --- what streams/metrics.py declares ---------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def declared_labels() -> dict[str, frozenset[str]]:
    """Exported series name -> label names, derived from a ``Metrics()`` registry."""
    metrics = Metrics()
    labelnames = {
        wrapper._name: frozenset(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    declared: dict[str, frozenset[str]] = {"up": TARGET_LABELS}
    for family in metrics.registry.collect():
        labels = labelnames.get(family.name, frozenset()) | TARGET_LABELS
        for suffix in _SUFFIXES.get(family.type, ("",)):
            extra = {"le"} if suffix == "_bucket" else set()
            declared[family.name + suffix] = labels | extra
    return declared


def allowed_metric_names() -> set[str]:
    return set(declared_labels()) | recording_rule_names()


# --- a small PromQL reader: enough to list metric and label names -------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*")
_CALL = re.compile(r"\s*\(")
#: A raw streamscore metric (not a recording rule) and its optional matchers.
_RAW_SELECTOR = re.compile(r"(?<![\w:])(streamscore_\w+)(?![\w:])(\{[^}]*\})?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords and labels excluded).

    >>> sorted(metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="b"}[5m])))'))
    ['a_bucket']
    >>> sorted(metric_names('a:b:c > on () group_left () vector(1) or d offset 5m'))
    ['a:b:c', 'd']
    """
    text = _without_strings(expr)
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {
        match.group()
        for match in _IDENTIFIER.finditer(text)
        if match.group().lower() not in _KEYWORDS and not _CALL.match(text, match.end())
    }


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched on) for every ``name{...}`` selector."""
    found = []
    for match in _SELECTOR.finditer(_without_strings(expr)):
        found.append((match.group(1) or "", set(_MATCHER_LABEL.findall(match.group(2)))))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Label names of by/without/on/ignoring/group_left/group_right clauses."""
    names: set[str] = set()
    for match in _GROUPING.finditer(_without_strings(expr)):
        names.update(part.strip() for part in match.group(1).split(",") if part.strip())
    return names


# --- tests ------------------------------------------------------------------------------

DASHBOARDS = dashboard_files()
QUERIES = all_queries()


def test_the_three_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} >= {"overview.json", "models.json", "feature_store.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_parses_and_is_well_formed(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard.get("uid") and dashboard.get("title")
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    for panel in panels(dashboard):
        grid = panel.get("gridPos", {})
        assert {"h", "w", "x", "y"} <= set(grid), f"{path.name}: {panel.get('title')} gridPos"
        assert grid["x"] + grid["w"] <= 24, f"{path.name}: {panel.get('title')} overflows"


def test_dashboard_uids_and_titles_are_unique() -> None:
    loaded = [load_dashboard(path) for path in DASHBOARDS]
    assert len({d["uid"] for d in loaded}) == len(loaded)
    assert len({d["title"] for d in loaded}) == len(loaded)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_the_prometheus_datasource(path: Path) -> None:
    for panel in panels(load_dashboard(path)):
        if panel["type"] == "row":
            continue
        title = f"{path.name}: {panel.get('title')}"
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_UID, title
        assert panel.get("targets"), f"{title} has no targets"
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid") == DATASOURCE_UID, title
            assert target.get("expr", "").strip(), f"{title} [{target.get('refId')}] no expr"


def test_the_datasource_uid_is_the_one_panels_use() -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert [ds["uid"] for ds in datasources if ds["type"] == "prometheus"] == [DATASOURCE_UID]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_pipeline_variable_filters_every_streamscore_selector(path: Path) -> None:
    dashboard = load_dashboard(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "pipeline" in variables, f"{path.name}: no $pipeline template variable"
    assert variables["pipeline"]["datasource"]["uid"] == DATASOURCE_UID
    for query in dashboard_queries():
        if not query.source.startswith(path.name):
            continue
        for name, match in _RAW_SELECTOR.findall(query.expr):
            assert 'pipeline=~"$pipeline"' in match, f"{query.source}: {name} ignores $pipeline"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables_use_declared_metrics(path: Path) -> None:
    declared = declared_labels()
    for query in variable_queries(load_dashboard(path)):
        match = re.fullmatch(r"label_values\(\s*([\w:]+)\s*,\s*(\w+)\s*\)", query.strip())
        assert match, f"{path.name}: unexpected variable query {query!r}"
        metric, label = match.groups()
        assert metric in declared, f"{path.name}: {metric} is not declared"
        assert label in declared[metric], f"{path.name}: {metric} has no label {label}"


def test_the_promql_reader_sees_what_it_should() -> None:
    expr = (
        'sum by (pipeline, stage) (rate(a_sum{pipeline=~"$pipeline"}[$__rate_interval]))'
        ' / on (pipeline) group_left () sum by (pipeline) (rate(b_total{x!="y{z}"}[1m]))'
        " or vector(0) > bool 1e3"
    )
    assert metric_names(expr) == {"a_sum", "b_total"}
    assert selectors(expr) == [("a_sum", {"pipeline"}), ("b_total", {"x"})]
    assert grouping_labels(expr) == {"pipeline", "stage"}


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.source)
def test_promql_uses_only_declared_metrics(query: Query) -> None:
    names = metric_names(query.expr)
    if query.kind != "record":  # a recording rule may be a constant (the SLO)
        assert names, f"{query.source}: selects no metric: {query.expr}"
    unknown = names - allowed_metric_names()
    assert not unknown, f"{query.source}: not declared in streams/metrics.py: {sorted(unknown)}"


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.source)
def test_promql_uses_only_declared_labels(query: Query) -> None:
    declared = declared_labels()
    every_label = set().union(*declared.values())
    for name, labels in selectors(query.expr):
        allowed = declared.get(name, every_label)  # recording rules keep a subset
        assert labels <= allowed, f"{query.source}: {name} has no label {labels - allowed}"
    unknown = grouping_labels(query.expr) - every_label
    assert not unknown, f"{query.source}: unknown labels in grouping: {sorted(unknown)}"


def test_every_alert_has_severity_and_annotations() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULES_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts - firing == set(), "alerts never shown firing in the rules' unit tests"
    assert alerts - quiet == set(), "alerts never shown not firing in the rules' unit tests"


# --- the model-health dashboard, generated by streams/monitoring/dashboard.py --------------


def test_the_model_health_dashboard_is_the_generators_output() -> None:
    """Edit streams/monitoring/dashboard.py and regenerate; never the JSON by hand."""
    from streams.monitoring.dashboard import render

    path = DASHBOARD_DIR / "model_health.json"
    assert path in DASHBOARDS
    assert path.read_text() == render(), (
        "regenerate: python -m streams.monitoring.dashboard > monitoring/grafana/dashboards/"
        "model_health.json"
    )


def test_the_model_health_dashboard_shows_drift_freshness_and_dead_letters() -> None:
    dashboard = load_dashboard(DASHBOARD_DIR / "model_health.json")
    exprs = " ".join(
        target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])
    )
    for metric in (
        "streamscore_drift_psi",
        "streamscore_drift_score_psi",
        "streamscore_feature_age_seconds_bucket",
        "streamscore_defaulted_features_total",
        "streamscore_dead_letters_total",
    ):
        assert metric in exprs, metric


def test_the_model_health_dashboard_shows_every_signal_in_its_row() -> None:
    """Data quality and volume, skew, performance, slices, models and actions: each row
    draws its metrics, and every panel says what it shows."""
    dashboard = load_dashboard(DASHBOARD_DIR / "model_health.json")
    rows: dict[str, str] = {}
    row = ""
    for panel in panels(dashboard):
        if panel["type"] == "row":
            row = panel["title"]
            continue
        assert panel["title"] and panel["description"], panel["id"]
        rows[row] = rows.get(row, "") + " ".join(t["expr"] for t in panel["targets"])
    expected = {
        "Data quality and volume": (
            'streamscore_data_quality_ratio{pipeline=~"$pipeline", check="missing"}',
            'check=~"at_min|at_max"',
            'check="unknown"',
            "pipeline:streamscore_events:rate10m",
            "pipeline:streamscore_events:rate_baseline",
            "pipeline:streamscore_events:volume_drop_ratio",
            "pipeline:streamscore_events:volume_spike_ratio",
            "pipeline:streamscore_events:baseline_days",
            'stage=~"quality|drift"',
        ),
        "Online/offline skew": (
            "streamscore_skew_checked_total",
            "streamscore_skew_mismatched_total",
            "streamscore_skew_max_abs_difference",
            "streamscore_skew_unchecked_total",
        ),
        "Performance: estimated, realized, concept drift": (
            "streamscore_estimated_accuracy",
            "streamscore_realized_accuracy{",
            "streamscore_estimated_minus_realized_accuracy",
            "time() - max by (pipeline, model)"
            " (streamscore_realized_accuracy_window_start_timestamp_seconds",
            "streamscore_concept_drift_detections_total",
            "streamscore_concept_drift_error_mean",
        ),
        "Slices": (
            "streamscore_slice_score_psi",
            "delta(streamscore_slice_score_psi",
            'streamscore_slice_online_metric{pipeline=~"$pipeline", metric="accuracy"}',
            'metric="window_count"',
        ),
        "Models and actions": (
            'model=~".+@challenger"',
            'role="challenger"',
            "streamscore_canary_version",
            "streamscore_canary_predictions_total",
            'model=~".+@canary"',
            "increase(streamscore_actions_total",
        ),
    }
    for title, exprs in expected.items():
        assert title in rows, f"no row {title!r}"
        for expr in exprs:
            assert expr in rows[title], f"{title}: {expr}"


def test_a_panel_added_to_a_row_is_laid_out_after_the_others() -> None:
    from streams.monitoring.dashboard import ROWS, Panel, Row, Target, layout

    extra = Panel("new", "a new signal", (Target('x{pipeline=~"$pipeline"}'),), width=12)
    rows = [*ROWS[:-1], Row(ROWS[-1].title, [*ROWS[-1].panels, extra])]
    laid = layout(rows)
    assert [p["id"] for p in laid] == list(range(1, len(laid) + 1))
    last, before = laid[-1], laid[-2]
    assert last["title"] == "new"
    assert last["gridPos"]["y"] == before["gridPos"]["y"] + before["gridPos"]["h"]  # wrapped
    assert last["gridPos"]["x"] == 0
