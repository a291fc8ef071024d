"""Static checks of deploy/kubernetes/: no cluster runs here, so nothing is applied.

Core kinds are validated against the Kubernetes API schemas (the ``kubernetes-validate``
package, strict: unknown fields fail); the KEDA ScaledObject against a schema of its own
below (the fields of KEDA v2's CRD this set uses, unknown ones refused). Then the manifests
must agree with the code and with docker-compose.yml: settings names and values, the metrics
port and probe paths, the spec, the roles, the consumer group and the partition count.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from streams.settings import Settings
from streams.spec import load_spec
from tests.unit.test_compose_static import (
    SERVICES,
    dockerfile_instructions,
    environment,
)

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
SPEC_PATH = "streams/specs/card_fraud.yaml"
SPEC = load_spec(ROOT / SPEC_PATH)
KUBERNETES_VERSION = "1.30"
PREFIX = "STREAMSCORE_"
#: Files kept out of kustomization.yaml on purpose (a template; a CRD few clusters have).
NOT_APPLIED = {"secret.template.yaml", "podmonitor.yaml", "controller.yaml"}


def manifests() -> dict[str, dict[str, Any]]:
    """file name -> its one document (every file holds one object)."""
    found = {}
    for path in sorted(KUBE.glob("*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        assert len(docs) == 1, f"{path.name}: one object per file"
        found[path.name] = docs[0]
    return found


MANIFESTS = manifests()
BY_NAME = {(d["kind"], d["metadata"]["name"]): d for d in MANIFESTS.values() if "metadata" in d}
CORE = sorted(
    name for name, doc in MANIFESTS.items() if doc["kind"] not in ("Kustomization",)
    and "." not in doc["apiVersion"].split("/")[0]  # core and apps/batch, not CRDs
)  # fmt: skip


def deployment(name: str) -> dict[str, Any]:
    return BY_NAME[("Deployment", name)]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        workload = workload["spec"]["jobTemplate"]
    return dict(workload["spec"]["template"]["spec"])


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(workload)["containers"]
    return dict(only)


def settings_data() -> dict[str, str]:
    return dict(BY_NAME[("ConfigMap", "streamscore-settings")]["data"])


# --- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORE)
def test_core_objects_match_the_kubernetes_api_schema(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")  # a dev dependency
    kubernetes_validate.validate(MANIFESTS[name], KUBERNETES_VERSION, strict=True)


class _Keda(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _KafkaMetadata(_Keda):
    """KEDA's Apache Kafka scaler (keda.sh/docs/2.x/scalers/apache-kafka/), as strings."""

    bootstrapServers: str
    consumerGroup: str
    topic: str
    lagThreshold: str = Field(pattern=r"^\d+$")
    activationLagThreshold: str = Field(default="0", pattern=r"^\d+$")
    offsetResetPolicy: Literal["latest", "earliest"] = "latest"
    allowIdleConsumers: Literal["true", "false"] = "false"
    limitToPartitionsWithLag: Literal["true", "false"] = "false"
    excludePersistentLag: Literal["true", "false"] = "false"
    version: str | None = None
    sasl: str | None = None
    tls: str | None = None


class _Trigger(_Keda):
    type: Literal["kafka"]
    metadata: _KafkaMetadata
    authenticationRef: dict[str, str] | None = None


class _ScaleTargetRef(_Keda):
    name: str
    kind: str = "Deployment"
    apiVersion: str = "apps/v1"


class _ScaledObjectSpec(_Keda):
    scaleTargetRef: _ScaleTargetRef
    minReplicaCount: int = Field(ge=0)
    maxReplicaCount: int = Field(ge=1)
    pollingInterval: int = Field(default=30, ge=1)
    cooldownPeriod: int = Field(default=300, ge=0)
    advanced: dict[str, Any] | None = None
    triggers: list[_Trigger] = Field(min_length=1)


class _Metadata(_Keda):
    name: str
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ScaledObject(_Keda):
    apiVersion: Literal["keda.sh/v1alpha1"]
    kind: Literal["ScaledObject"]
    metadata: _Metadata
    spec: _ScaledObjectSpec


SCALED = ScaledObject.model_validate(MANIFESTS["keda-scaledobject.yaml"])


def test_the_scaled_object_scales_the_scoring_workers_up_to_the_input_partitions() -> None:
    spec = SCALED.spec
    assert ("Deployment", spec.scaleTargetRef.name) == ("Deployment", "streamscore-worker")
    assert 1 <= spec.minReplicaCount <= spec.maxReplicaCount == SPEC.input.partitions
    (trigger,) = spec.triggers
    kafka = trigger.metadata
    assert kafka.topic == SPEC.input.topic
    assert kafka.consumerGroup == SPEC.name  # the Faust app id, the workers' group
    assert kafka.bootstrapServers == settings_data()[f"{PREFIX}KAFKA_BOOTSTRAP_SERVERS"]
    assert kafka.allowIdleConsumers == "false"


def test_kustomization_applies_every_manifest_but_the_template_and_the_crd_extra() -> None:
    kustomization = MANIFESTS["kustomization.yaml"]
    resources = set(kustomization["resources"])
    assert all((KUBE / resource).is_file() for resource in resources)
    assert resources == set(MANIFESTS) - {"kustomization.yaml"} - NOT_APPLIED


# --- agreement with settings, compose, the spec and the image ------------------------------


def test_settings_are_valid_and_agree_with_compose() -> None:
    data = settings_data()
    fields = {key.removeprefix(PREFIX).lower(): value for key, value in data.items()}
    assert all(key.startswith(PREFIX) for key in data)
    assert set(fields) <= set(Settings.model_fields), set(fields) - set(Settings.model_fields)
    Settings(**fields)  # every value validates
    compose = environment(SERVICES["worker"])
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "MODEL_DIR", "DATA_DIR"):
        assert data[PREFIX + key] == compose[PREFIX + key], key
    assert data[f"{PREFIX}METRICS_HOST"] == "0.0.0.0"


def test_the_secret_template_holds_only_secret_settings_and_is_never_applied() -> None:
    secret = MANIFESTS["secret.template.yaml"]
    for key in secret["stringData"]:
        field = Settings.model_fields[key.removeprefix(PREFIX).lower()]
        assert SecretStr in getattr(field.annotation, "__args__", (field.annotation,)), key
    assert not any(value for value in secret["stringData"].values()), "values in git"
    for workload in ("streamscore-worker", "streamscore-learner"):
        refs = [ref for ref in container(deployment(workload))["envFrom"] if "secretRef" in ref]
        assert refs == [{"secretRef": {"name": secret["metadata"]["name"], "optional": True}}]


@pytest.mark.parametrize(
    ("name", "role", "service"),
    [("streamscore-worker", "scoring", "worker"), ("streamscore-learner", "learning", "learner")],
)
def test_workloads_run_compose_s_command_and_role(name: str, role: str, service: str) -> None:
    main = container(deployment(name))
    assert main["args"] == SERVICES[service]["command"]
    env = {item["name"]: item["value"] for item in main.get("env", [])}
    assert env[f"{PREFIX}WORKER_ROLE"] == role
    Settings(worker_role=role)
    for key, value in environment(SERVICES[service]).items():
        if key not in (f"{PREFIX}METRICS_HOST",):
            assert {**settings_data(), **env}.get(key) == value, f"{name}: {key}"


@pytest.mark.parametrize("name", ["streamscore-worker", "streamscore-learner"])
def test_probes_ask_live_and_ready_on_the_metrics_port(name: str) -> None:
    workload = deployment(name)
    main = container(workload)
    port = int(settings_data()[f"{PREFIX}METRICS_PORT"])
    assert port == Settings.model_fields["metrics_port"].default
    (metrics,) = [p for p in main["ports"] if p["name"] == "metrics"]
    assert metrics["containerPort"] == port
    served = (ROOT / "streams" / "runtime" / "worker.py").read_text()
    for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        assert main[probe]["httpGet"] == {"path": path, "port": "metrics"}
        assert f'"{path}":' in served, f"the worker serves no {path}"
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > Settings.model_fields["shutdown_timeout_seconds"].default


def test_one_learner_never_two() -> None:
    learner = deployment("streamscore-learner")
    assert learner["spec"]["replicas"] == 1
    assert learner["spec"]["strategy"] == {"type": "Recreate"}
    scaled = {SCALED.spec.scaleTargetRef.name}
    assert "streamscore-learner" not in scaled


def _workloads() -> list[str]:
    return sorted(
        name for name, doc in MANIFESTS.items() if doc["kind"] in ("Deployment", "Job", "CronJob")
    )


@pytest.mark.parametrize("name", _workloads())
def test_pods_run_the_image_s_user_with_the_spec_and_the_shared_data(name: str) -> None:
    workload = MANIFESTS[name]
    pod = pod_spec(workload)
    (workdir,) = [args for keyword, args in dockerfile_instructions() if keyword == "WORKDIR"]
    users = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    uid = re.search(r"--uid (\d+)", " ".join(users))
    assert uid and pod["securityContext"]["runAsUser"] == int(uid.group(1))
    mounts = {m["mountPath"]: m for m in container(workload)["volumeMounts"]}
    spec_mount = mounts[f"{workdir}/{SPEC_PATH}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[spec_mount["name"]]["configMap"]["name"] == "streamscore-spec"
    assert settings_data()[f"{PREFIX}MODEL_DIR"] in mounts
    command = " ".join(container(workload).get("command", []) + container(workload)["args"])
    assert f"--spec {SPEC_PATH}" in command


def test_the_spec_config_map_is_the_repository_spec() -> None:
    data = BY_NAME[("ConfigMap", "streamscore-spec")]["data"]
    assert data == {Path(SPEC_PATH).name: (ROOT / SPEC_PATH).read_text()}


def test_features_are_materialized_on_a_schedule() -> None:
    cron = BY_NAME[("CronJob", "streamscore-materialize")]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert container(cron)["args"][:2] == ["features", "materialize"]
