"""The monitoring config against a real Prometheus (Debian package ``prometheus``).

First promtool: the config, the rules and the rules' unit tests. Then a real Prometheus
server, configured from monitoring/prometheus/prometheus.yml (the worker job's DNS service
discovery replaced by the target below, 1 s scrape and rule intervals), scrapes a
``metrics_target`` and evaluates the real rule file. Every PromQL expression of every
dashboard panel and every rule must then parse and return data.

``metrics_target`` is the one place that decides what is scraped: today an in-test
``prometheus_client`` server whose ``streams.metrics.Metrics`` registry a thread keeps
filling with realistic values for every metric family. To check the queries against a real
``streamscore worker`` under load, make the fixture start one (tests/integration/harness.py)
and a producer, and return the worker's ``127.0.0.1:<STREAMSCORE_METRICS_PORT>``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import start_http_server

from streams.embedded import die_with_parent, free_port
from streams.metrics import Metrics, observe_many
from streams.spec import feature_column, load_spec
from tests.unit.test_dashboards_static import (
    RULES,
    RULES_TEST,
    Query,
    all_queries,
    dashboard_files,
    load_dashboard,
    variable_queries,
)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
DEMO_SPEC = ROOT / "streams" / "specs" / "card_fraud.yaml"
WORKER_JOB = "streamscore-worker"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        PROMETHEUS is None or PROMTOOL is None,
        reason="prometheus/promtool not on PATH: `apt-get install prometheus` (.ci/run does)",
    ),
]

#: Grafana's variables, replaced the way Grafana would before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
QUERY_TIMEOUT = 20.0  # seconds a query may take to return data once scraping has begun

#: Mean time one micro-batch spends in each stage; label outcomes besides "joined" (shares).
STAGE_MEAN_SECONDS = {"decode": 0.0004, "enrich": 0.004, "infer": 0.0008, "publish": 0.002}
OTHER_LABEL_OUTCOMES = {"late": 0.02, "orphan": 0.01, "duplicate": 0.005, "invalid": 0.002}


# --- the scraped target -------------------------------------------------------------------


class SimulatedWorker:
    """Fills a ``Metrics`` registry the way a loaded scoring worker would, every ``period``.

    Labels come from the demo spec (pipeline name, feature columns, primary model); every
    metric family gets at least one series on the first ``tick``.
    """

    def __init__(self, metrics: Metrics, seed: int = 7) -> None:
        spec = load_spec(DEMO_SPEC)
        self.metrics = metrics
        self.pipeline = spec.name
        self.topic = spec.input.topic
        self.partitions = [str(p) for p in range(spec.input.partitions)]
        self.features = [feature_column(ref) for ref in spec.features.refs]
        self.primary = spec.model.name
        self.shadow = "fraud_lr"
        self.online = "fraud_river"
        self.rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        m, p = metrics, self.pipeline
        m.model_info.labels(p, "primary", self.primary, "3").set(1)
        m.model_info.labels(p, "shadow", self.shadow, "1").set(1)
        m.model_info.labels(p, "online", self.online, "1").set(1)

    def tick(self) -> None:
        m, p, rng = self.metrics, self.pipeline, self.rng
        n = int(rng.integers(32, 257))
        bad = int(rng.binomial(n, 0.01))
        m.events.labels(p).inc(n)
        m.batch_size.labels(p).observe(n)
        m.batch_wait_seconds.labels(p).observe(rng.uniform(0.0002, 0.005))
        m.dead_letters.labels(p, "decode", "not_json").inc(bad // 2)
        m.dead_letters.labels(p, "decode", "out_of_range").inc(bad - bad // 2)
        for stage, mean in STAGE_MEAN_SECONDS.items():
            m.stage_seconds.labels(p, stage).observe(rng.gamma(4.0, mean / 4.0))
        scored = n - bad
        m.predictions.labels(p, self.primary).inc(scored)
        m.predictions.labels(p, self.shadow).inc(scored)
        m.inference_seconds.labels(p, self.primary, "primary").observe(rng.gamma(4, 2e-4))
        m.inference_seconds.labels(p, self.shadow, "shadow").observe(rng.gamma(4, 5e-5))
        observe_many(m.end_to_end_seconds.labels(p), rng.lognormal(np.log(0.008), 0.5, scored))
        misses = int(rng.binomial(scored, 0.02))
        m.feature_misses.labels(p).inc(misses)
        for feature in self.features:
            m.defaulted_features.labels(p, feature).inc(misses + int(rng.binomial(scored, 0.01)))
        for partition in self.partitions:
            m.consumer_lag.labels(p, self.topic, partition).set(int(rng.integers(0, 400)))
        m.assigned_partitions.labels(p).set(len(self.partitions))
        # shadow vs primary
        m.shadow_agreement.labels(p, self.shadow).set(rng.uniform(0.95, 0.99))
        observe_many(m.shadow_score_diff.labels(p, self.shadow), rng.exponential(0.03, scored))
        m.shadow_changed.labels(p, self.shadow).inc(int(rng.binomial(scored, 0.03)))
        m.shadow_shed.labels(p, self.shadow).inc(int(rng.binomial(scored, 0.001)))
        m.shadow_backlog.labels(p, self.shadow).set(int(rng.integers(0, 64)))
        m.shadow_errors.labels(p, self.shadow).inc(int(rng.binomial(scored, 0.001)))
        # delayed labels and online learning
        joined = int(rng.binomial(scored, 0.8))
        m.labels.labels(p, "joined").inc(joined)
        for outcome, share in OTHER_LABEL_OUTCOMES.items():
            m.labels.labels(p, outcome).inc(int(rng.binomial(scored, share)))
        observe_many(m.label_delay_seconds.labels(p), rng.exponential(30.0, joined))
        m.label_coverage.labels(p).set(rng.uniform(0.85, 0.95))
        m.online_learned.labels(p, self.online).inc(joined)
        for model in (self.online, self.primary):
            m.online_metric.labels(p, model, "accuracy").set(rng.uniform(0.96, 0.99))
            m.online_metric.labels(p, model, "roc_auc").set(rng.uniform(0.85, 0.95))
            m.online_metric.labels(p, model, "log_loss").set(rng.uniform(0.05, 0.15))

    def start(self, period: float = 0.05) -> None:
        self.tick()

        def run() -> None:
            while not self._stop.wait(period):
                self.tick()

        self._thread = threading.Thread(target=run, name="simulated-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def metrics_target() -> Iterator[str]:
    """host:port of a /metrics endpoint under load, for Prometheus to scrape."""
    metrics = Metrics()
    worker = SimulatedWorker(metrics)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    worker.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        worker.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- the Prometheus server ----------------------------------------------------------------


def scrape_config_for(target: str) -> dict[str, Any]:
    """The repository's prometheus.yml, scraping ``target`` instead of DNS discovery."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_YML.parent / path) for path in config["rule_files"]]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == WORKER_JOB]
    for key in ("dns_sd_configs", "scrape_interval", "scrape_timeout"):
        job.pop(key, None)
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    return config


def _get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:  # Prometheus answers bad queries with 400 + JSON
        return exc.code, json.loads(exc.read() or b"{}")


def _query(base: str, expr: str) -> dict[str, Any]:
    status, body = _get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert status == 200 and body.get("status") == "success", (
        f"query failed ({status}): {body.get('errorType')}: {body.get('error')}\n  {expr}"
    )
    data: dict[str, Any] = body["data"]
    return data


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def prometheus(metrics_target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real Prometheus scraping ``metrics_target`` with the repo's rules."""
    assert PROMETHEUS is not None
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config_for(metrics_target)))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited ({process.returncode}):\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:  # refused until it listens; 503 while it starts
            return False

    try:
        _wait(ready, 30, "prometheus to be ready")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def scraped(prometheus: str) -> str:
    """``prometheus`` once it has scraped the target a few times and evaluated every rule."""

    def scraped_a_few_times() -> bool:
        result = _query(prometheus, f'count_over_time(up{{job="{WORKER_JOB}"}}[1m])')["result"]
        return bool(result) and float(result[0]["value"][1]) >= 3

    _wait(scraped_a_few_times, 30, "3 scrapes of the metrics target")
    up = _query(prometheus, f'up{{job="{WORKER_JOB}"}}')["result"]
    assert [sample["value"][1] for sample in up] == ["1"], f"target not up: {up}"

    def rules_evaluated() -> bool:
        groups = _get(f"{prometheus}/api/v1/rules")[1]["data"]["groups"]
        return all(rule["health"] != "unknown" for g in groups for rule in g["rules"])

    _wait(rules_evaluated, 15, "every rule to be evaluated")
    return prometheus


# --- promtool -----------------------------------------------------------------------------


def _promtool(*args: str) -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_promtool_check_config() -> None:
    _promtool("check", "config", str(PROMETHEUS_YML))


def test_promtool_check_rules() -> None:
    _promtool("check", "rules", str(RULES))


def test_promtool_test_rules() -> None:
    _promtool("test", "rules", str(RULES_TEST))


def test_the_target_exposes_every_metric_family_and_passes_promtool_lint(
    metrics_target: str,
) -> None:
    with urllib.request.urlopen(f"http://{metrics_target}/metrics", timeout=5) as response:  # noqa: S310
        exposition = response.read().decode()
    families = {family.name for family in Metrics().registry.collect()}
    exposed = set(re.findall(r"^# TYPE (\S+) ", exposition, flags=re.MULTILINE))
    exposed |= {name.removesuffix("_total") for name in exposed}
    assert families <= exposed
    for family in families:
        assert re.search(rf"^{family}\w*[{{ ]", exposition, flags=re.MULTILINE), (
            f"the target exports no series of {family}: give SimulatedWorker.tick a value"
        )
    assert PROMTOOL is not None
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr


# --- every query on live data -------------------------------------------------------------


def concrete(query: Query, pipeline: str) -> str:
    """The expression as Prometheus receives it: Grafana variables replaced; an alert's
    conditions turned into ``bool`` comparisons (``absent(x)`` into ``x``), so that the test
    sees data whenever the alert *could* be evaluated, not only while it fires."""
    expr = query.expr.replace("$pipeline", pipeline)
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"{query.source}: unreplaced variable in {expr}"
    if query.kind == "alert":
        expr = armed(expr)
    return expr


def armed(expr: str) -> str:
    """Add ``bool`` to every comparison outside of label matchers; drop ``absent``.

    >>> armed('up{job!="x"} == 0 and absent(y{a="b"}) > on () group_left () z')
    'up{job!="x"} == bool 0 and (y{a="b"}) > bool on () group_left () z'
    """
    out: list[str] = []
    i, braces, quote = 0, 0, ""
    while i < len(expr):
        char = expr[i]
        if quote:
            out.append(expr[i : i + 2] if char == "\\" else char)
            i += 2 if char == "\\" else 1
            quote = "" if char == quote else quote
            continue
        if char in "\"'`":
            quote = char
        elif char in "{}":
            braces += 1 if char == "{" else -1
        elif braces == 0 and (match := re.match(r"==|!=|>=|<=|>|<", expr[i:])):
            operator = match.group()
            out.append(operator)
            i += len(operator)
            if not re.match(r"\s*bool\b", expr[i:]):
                out.append(" bool")
            continue
        out.append(char)
        i += 1
    return re.sub(r"\babsent\(", "(", "".join(out))


def _returns_data(base: str, expr: str) -> Callable[[], bool]:
    def check() -> bool:
        data = _query(base, expr)  # fails at once on a parse error
        if data["resultType"] == "scalar":
            values = [float(data["result"][1])]
        else:
            values = [float(sample["value"][1]) for sample in data["result"]]
        return any(not math.isnan(value) for value in values)

    return check


@pytest.fixture(scope="module")
def pipeline() -> str:
    return load_spec(DEMO_SPEC).name


@pytest.mark.parametrize("query", all_queries(), ids=lambda q: q.source)
def test_query_parses_and_returns_data(query: Query, scraped: str, pipeline: str) -> None:
    expr = concrete(query, pipeline)
    _wait(_returns_data(scraped, expr), QUERY_TIMEOUT, f"{query.source} to return data: {expr}")


def test_rules_evaluate_without_errors(scraped: str) -> None:
    groups = _get(f"{scraped}/api/v1/rules")[1]["data"]["groups"]
    bad = [
        (r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"
    ]
    assert not bad
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    expected = {q.source.split(": ", 1)[1] for q in all_queries() if q.kind != "panel"}
    assert loaded == expected


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_template_variables_find_the_pipeline(path: Path, scraped: str, pipeline: str) -> None:
    for query in variable_queries(load_dashboard(path)):
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", query)
        assert match, f"{path.name}: unexpected variable query {query!r}"
        metric, label = match.groups()
        params = urllib.parse.urlencode({"match[]": metric})
        status, body = _get(f"{scraped}/api/v1/label/{label}/values?{params}")
        assert status == 200 and pipeline in body["data"], f"{path.name}: {query} -> {body}"
