"""The monitoring config against a real Prometheus (Debian package ``prometheus``).

First promtool: the config, the rules and the rules' unit tests. Then a real Prometheus
server, configured from monitoring/prometheus/prometheus.yml (the worker job's DNS service
discovery replaced by the target below, 1 s scrape and rule intervals), scrapes a
``metrics_target`` and evaluates the real rule file. Every PromQL expression of every
dashboard panel and every rule must then parse and return data (a panel on series that only
an event creates, such as a challenger alias set, is listed in ``EMPTY_UNTIL_EVENT`` with
the event: it must parse, and return data once the event happened).

``metrics_target`` is a real ``streamscore worker`` running the demo pipeline (primary,
two shadows, online model, labels) under a light load that exercises every path: bad input
(at the demo's 1%), unknown entities, joined, late and orphan labels. That traffic must raise
none of the service-level alerts. ``faulty_target``, a second worker fed nothing but bad
events, must raise the ones that fit: no predictions out, dead-letter rate.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.cli.producer import EventProducer
from streams.metrics import Metrics
from streams.runtime.connections import KafkaConnection
from streams.runtime.embedded import die_with_parent, free_port
from streams.runtime.processes import WorkerProcess
from streams.settings import Settings
from streams.spec import PipelineSpec
from tests.integration.harness import PreparedPipeline, create_topics, produce
from tests.unit.test_dashboards_static import (
    RULES,
    RULES_TESTS,
    Query,
    all_queries,
    dashboard_files,
    load_dashboard,
    variable_queries,
)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
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
QUERY_TIMEOUT = 60.0  # seconds a query may take to return data once load and scraping run

LOAD_RATE = 300.0  # events/s from the main producer: enough for every series, light on CPU
LABEL_WINDOW = 2.0  # seconds: short, so a slower label stream is "late" within the test
DEMO_BAD_RATE = 0.01  # the share of bad events `streamscore demo` sends
#: Alerts on the service's levels: demo traffic raises none of them.
SLO_ALERTS = frozenset(
    {
        "StreamscoreEndToEndLatencyAboveSLO",
        "StreamscoreDeadLetterRateHigh",
        "StreamscoreLabelCoverageLow",
        "StreamscoreNoPredictions",
        "StreamscoreNoPartitionsAssigned",
        "StreamscoreShadowErrors",
    }
)


# --- the scraped target: a real worker under load ------------------------------------------


@pytest.fixture(scope="module")
def live_pipeline(card_fraud: PreparedPipeline) -> tuple[Path, PipelineSpec]:
    """The demo pipeline (shadows, online model, labels) under its own name and topics."""
    suffix = uuid.uuid4().hex[:8]
    labels = {
        **card_fraud.spec.labels.model_dump(),
        "topic": f"labels-{suffix}",
        "window_seconds": LABEL_WINDOW,
    }
    # Drift windows of 1,000 events close every few seconds at LOAD_RATE: the PSI series
    # and the drift alerts' expressions have data well within the test's waits.
    # Every monitor on, so that every metric family and dashboard panel has data: a few
    # labelled predictions checked against the offline store, slices, a declared canary
    # (its alias unset: the primary serves every key).
    monitoring = {
        "window": {"events": 1000},
        "skew": {"sample_rate": 0.02},
        "slices": ["channel", "is_foreign"],
    }
    model = {
        **card_fraud.spec.model.model_dump(mode="json", exclude_none=True),
        "canary": {"share": 0.1},
    }
    return card_fraud.variant(suffix, labels=labels, monitoring=monitoring, model=model)


async def _load(spec: PipelineSpec, bootstrap: str, stop: asyncio.Event) -> None:
    """Valid, bad and unknown-entity events; labels 1 s later (joined), a slow stream whose
    labels come after the window (late), and labels for events never seen (orphans)."""
    kafka = KafkaConnection(bootstrap)
    main = EventProducer(
        spec, kafka, rate=LOAD_RATE, bad_rate=DEMO_BAD_RATE, label_delay=1.0, seed=1
    )
    slow = EventProducer(spec, kafka, rate=10, label_delay=3 * LABEL_WINDOW, seed=2)
    assert spec.labels is not None
    orphans = [(b"o", orjson.dumps({"event_id": f"never-{i}", "label": 1})) for i in range(20)]
    await produce(bootstrap, spec.labels.topic, orphans)
    await asyncio.gather(main.run(stop), slow.run(stop))


def _worker_under_load(
    prepared: PreparedPipeline,
    pipeline: tuple[Path, PipelineSpec],
    load: Callable[[Settings, asyncio.Event], Awaitable[None]],
    name: str,
) -> Iterator[str]:
    """A real ``streamscore worker`` for ``pipeline`` with ``load`` running in a thread of its
    own once the worker owns partitions; yields the host:port of its /metrics."""
    spec_path, spec = pipeline
    settings = prepared.settings.model_copy(update={"metrics_port": free_port()})
    asyncio.run(create_topics(settings, spec))
    worker = WorkerProcess(spec_path, settings, prepared.workdir / f"{spec.name}.log")
    stop = threading.Event()

    def run_load() -> None:
        async def main() -> None:
            done = asyncio.Event()
            runner = asyncio.create_task(load(settings, done))
            while not stop.is_set() and not runner.done():
                await asyncio.sleep(0.2)
            done.set()
            await runner

        asyncio.run(main())

    thread = threading.Thread(target=run_load, name=f"{name}-load")
    try:
        _wait(lambda: bool(worker.assigned_partitions()), 90, f"the {name} worker to join")
        thread.start()
        yield f"127.0.0.1:{settings.metrics_port}"
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=30)
        worker.stop()


@pytest.fixture(scope="module")
def metrics_target(
    card_fraud: PreparedPipeline, live_pipeline: tuple[Path, PipelineSpec]
) -> Iterator[str]:
    """host:port of a real ``streamscore worker``'s /metrics, under load."""
    spec = live_pipeline[1]

    async def load(settings: Settings, done: asyncio.Event) -> None:
        await _load(spec, settings.kafka_bootstrap_servers, done)

    yield from _worker_under_load(card_fraud, live_pipeline, load, "live")


@pytest.fixture(scope="module")
def faulty_pipeline(card_fraud: PreparedPipeline) -> tuple[Path, PipelineSpec]:
    """A plain scoring variant (no shadows, online model or labels) for the injected fault."""
    return card_fraud.variant(
        f"faulty-{uuid.uuid4().hex[:8]}", shadows=[], online=None, labels=None
    )


@pytest.fixture(scope="module")
def faulty_target(
    card_fraud: PreparedPipeline, faulty_pipeline: tuple[Path, PipelineSpec]
) -> Iterator[str]:
    """host:port of a second worker's /metrics, fed only bad events: the injected fault."""
    spec = faulty_pipeline[1]

    async def load(settings: Settings, done: asyncio.Event) -> None:
        bad = EventProducer(spec, KafkaConnection.from_settings(settings), rate=20, bad_rate=1.0)
        await bad.run(done)

    yield from _worker_under_load(card_fraud, faulty_pipeline, load, "faulty")


# --- the Prometheus server ----------------------------------------------------------------


def scrape_config_for(*targets: str) -> dict[str, Any]:
    """The repository's prometheus.yml, scraping ``targets`` instead of DNS discovery."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_YML.parent / path) for path in config["rule_files"]]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == WORKER_JOB]
    for key in ("dns_sd_configs", "scrape_interval", "scrape_timeout"):
        job.pop(key, None)
    job["static_configs"] = [{"targets": list(targets)}]
    config["scrape_configs"] = [job]
    config.pop("alerting", None)  # no Alertmanager here: the test reads /api/v1/alerts
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
def prometheus(
    metrics_target: str, faulty_target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of a real Prometheus scraping both targets with the repo's rules."""
    assert PROMETHEUS is not None
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config_for(metrics_target, faulty_target)))
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
        return len(result) == 2 and all(float(r["value"][1]) >= 3 for r in result)

    _wait(scraped_a_few_times, 30, "3 scrapes of both metrics targets")
    up = _query(prometheus, f'up{{job="{WORKER_JOB}"}}')["result"]
    assert [sample["value"][1] for sample in up] == ["1", "1"], f"targets not up: {up}"

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
    _promtool("test", "rules", *map(str, RULES_TESTS))


def test_amtool_checks_the_alertmanager_config() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not on PATH: `apt-get install prometheus-alertmanager` (.ci/run does)")
    config = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
    done = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_target_exposes_every_metric_family_and_passes_promtool_lint(
    metrics_target: str,
) -> None:
    families = {family.name for family in Metrics().registry.collect()}

    def exposition() -> str:
        url = f"http://{metrics_target}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return str(response.read().decode())

    def missing() -> set[str]:
        text = exposition()
        return {
            family
            for family in families
            if not re.search(rf"^{family}\w*[{{ ]", text, flags=re.MULTILINE)
        }

    # Every family gets a series once the load has reached every path (labels come later).
    _wait(lambda: not missing(), 90, "a series of every metric family")
    text = exposition()
    exposed = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    assert families <= exposed | {name.removesuffix("_total") for name in exposed}
    assert PROMTOOL is not None
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
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
def pipeline(live_pipeline: tuple[Path, PipelineSpec]) -> str:
    return live_pipeline[1].name


@dataclass(frozen=True)
class EmptyUntil:
    """A query whose series exist only after an event the test's load does not cause."""

    reason: str
    #: PromQL (``$pipeline`` replaced) that has data once the event happened: from then on
    #: the query must return data like any other.
    event: str


#: Query source -> why it may be empty here. Each still has to parse; none may be listed
#: because it is slow or wrong, only because its event did not happen.
EMPTY_UNTIL_EVENT = {
    "model_health.json: Champion and challenger, labelled accuracy [B]": EmptyUntil(
        "'<model>@challenger' is scored only while the model's challenger alias is set"
        " (`train --from-stream` sets it); the test's registry has none",
        'streamscore_model_info{pipeline="$pipeline", role="challenger"}',
    ),
    "model_health.json: Challenger version [A]": EmptyUntil(
        "the challenger's streamscore_model_info exists only while its alias is set",
        'streamscore_model_info{pipeline="$pipeline", role="challenger"}',
    ),
    "model_health.json: Canary and primary, labelled accuracy [A]": EmptyUntil(
        "'<model>@canary' has labelled events only once a canary serves; the test declares"
        " model.canary but sets no canary alias",
        'streamscore_canary_version{pipeline="$pipeline"} > 0',
    ),
}


def test_every_query_allowed_to_be_empty_exists() -> None:
    """An entry outliving its panel (renamed, removed) would hide nothing: it goes too."""
    sources = {query.source for query in all_queries()}
    assert set(EMPTY_UNTIL_EVENT) <= sources, set(EMPTY_UNTIL_EVENT) - sources


@pytest.mark.parametrize("query", all_queries(), ids=lambda q: q.source)
def test_query_parses_and_returns_data(query: Query, scraped: str, pipeline: str) -> None:
    expr = concrete(query, pipeline)
    allowed = EMPTY_UNTIL_EVENT.get(query.source)
    if allowed is not None and not _has_data(scraped, allowed.event.replace("$pipeline", pipeline)):
        _query(scraped, expr)  # parses (fails at once otherwise); empty: allowed.reason
        return
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


# --- alerts: none on demo traffic, the right ones on a fault ------------------------------


def _alerts(base: str, pipeline: str) -> dict[str, str]:
    """alertname -> state (pending or firing) of the alerts about ``pipeline``."""
    status, body = _get(f"{base}/api/v1/alerts")
    assert status == 200, body
    return {
        alert["labels"]["alertname"]: alert["state"]
        for alert in body["data"]["alerts"]
        if alert["labels"].get("pipeline") == pipeline
    }


def _has_data(base: str, expr: str) -> bool:
    return bool(_query(base, expr)["result"])


def test_demo_traffic_raises_no_slo_alert(scraped: str, pipeline: str) -> None:
    # Every SLO alert's inputs exist for the pipeline (else "no alert" proves nothing), and
    # the learner's first label window has closed (it exports coverage 0 until then).
    on = f'{{pipeline="{pipeline}"}}'
    for expr in (
        f"pipeline:streamscore_end_to_end_latency_seconds:p99_5m{on}",
        f"pipeline:streamscore_dead_letters:ratio_rate5m{on} > 0",
        f"streamscore_label_join_coverage_ratio{on} > 0",
        f"pipeline_model:streamscore_predictions:rate5m{on} > 0",
        f"streamscore_assigned_partitions{on} > 0",
        f"streamscore_shadow_errors_total{on}",
        f"pipeline:streamscore_dead_letters:slo_ratio{on}",
    ):
        _wait(lambda expr=expr: _has_data(scraped, expr), QUERY_TIMEOUT, expr)
    # Then for several rule evaluations (1 s apart here), none is pending or firing.
    raised: dict[str, str] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not raised:
        raised = {
            name: state for name, state in _alerts(scraped, pipeline).items() if name in SLO_ALERTS
        }
        # A machine busy with other tests can push the demo's p99 over its 500 ms SLO for
        # real: the latency alert is then right, not a misfire, if the data says so.
        slow = (
            f"pipeline:streamscore_end_to_end_latency_seconds:p99_5m{on}"
            f" > pipeline:streamscore_end_to_end_latency_seconds:slo_p99{on}"
        )
        if "StreamscoreEndToEndLatencyAboveSLO" in raised and _has_data(scraped, slow):
            del raised["StreamscoreEndToEndLatencyAboveSLO"]
        time.sleep(0.5)
    assert not raised, f"demo traffic raised {raised}"


def test_all_bad_events_raise_no_predictions_and_dead_letter_alerts(
    scraped: str, faulty_pipeline: tuple[Path, PipelineSpec]
) -> None:
    name = faulty_pipeline[1].name
    expected = {"StreamscoreNoPredictions", "StreamscoreDeadLetterRateHigh"}

    def raised() -> bool:
        return expected <= set(_alerts(scraped, name))

    _wait(raised, QUERY_TIMEOUT, f"{sorted(expected)} for {name}")
    alerts = _alerts(scraped, name)
    assert set(alerts.values()) <= {"pending", "firing"}
    # Only the alerts that fit: the worker is up, owns its partitions and has no shadows.
    assert not (set(alerts) & SLO_ALERTS) - expected, alerts


def test_shadows_export_the_versions_they_serve(
    scraped: str, live_pipeline: tuple[Path, PipelineSpec]
) -> None:
    """Registry shadows and the online model name a version in streamscore_model_info."""
    spec = live_pipeline[1]
    shadows = f'streamscore_model_info{{pipeline="{spec.name}", role="shadow"}}'
    result = _query(scraped, shadows)["result"]
    names = {sample["metric"]["model"] for sample in result}
    assert spec.online is not None
    assert names == {*(shadow.name for shadow in spec.shadows), spec.online.name}, result
    assert all(sample["metric"]["version"] for sample in result), result
