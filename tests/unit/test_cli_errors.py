"""Every command fails in one line, within a bounded time, naming the problem and the
setting or flag to change: run as a user runs them, in a subprocess, with no server up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from models.estimators import make_estimator, to_onnx_bytes
from models.manifest import ManifestFields, TrainingData
from models.registry import ModelRegistry
from streams.spec import TrainModel, load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "streams" / "specs" / "card_fraud.yaml"
# A hang guard only: a loaded 2-core machine has taken 30 s to start `validate`, which imports
# Feast with its type checks. What must be quick is timed beyond the start-up (``startup``).
TIME_BOUND = 120.0


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> tuple[int, str, str, float]:
    """``python -m streams.cli ARGS`` with no STREAMSCORE_* variable but ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIME_BOUND,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def startup() -> float:
    """Seconds the command line takes to start and exit on this machine now (its imports):
    a bounded wait is asserted beyond this, so the bound holds however loaded the machine."""
    code, _, _, elapsed = run("--version")
    assert code == 0
    return elapsed


@pytest.fixture
def refused_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [["produce", "--count", "1"], ["compare"], ["dlq", "replay", "--dry-run"]],
    ids=["produce", "compare", "dlq-replay"],
)
def test_an_unreachable_broker_is_one_line_naming_the_setting(
    command: list[str], refused_port: int
) -> None:
    address = f"127.0.0.1:{refused_port}"
    env = {"STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": address}
    code, _, stderr, _ = run(*command, "--spec", str(SPEC), env=env)
    assert code == 1
    line = one_line_error(stderr)
    assert f"cannot reach the Kafka broker at {address}" in line
    assert "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS" in line


def test_a_broker_that_never_answers_is_given_up_after_the_connect_timeout(
    silent_port: int, startup: float
) -> None:
    env = {
        "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{silent_port}",
        "STREAMSCORE_KAFKA_CONNECT_TIMEOUT_SECONDS": "1",
    }
    code, _, stderr, elapsed = run("produce", "--spec", str(SPEC), "--count", "1", env=env)
    assert code == 1
    line = one_line_error(stderr)
    assert "no answer in 1 s" in line
    assert "STREAMSCORE_KAFKA_CONNECT_TIMEOUT_SECONDS" in line
    assert elapsed < startup + 15  # the client's own timeouts alone are 40 s


def test_a_worker_with_unreachable_redis_stops_in_one_line(refused_port: int) -> None:
    url = f"redis://127.0.0.1:{refused_port}/0"
    env = {"STREAMSCORE_REDIS_URL": url, "STREAMSCORE_METRICS_PORT": "0"}
    code, _, stderr, _ = run("worker", "--spec", str(SPEC), env=env)
    assert code == 1
    line = one_line_error(stderr)
    assert f"cannot reach the Redis at {url}" in line
    assert "STREAMSCORE_REDIS_URL" in line


def test_features_apply_with_unreachable_redis_stops_in_one_line(refused_port: int) -> None:
    url = f"redis://127.0.0.1:{refused_port}/0"
    code, _, stderr, _ = run(
        "features", "apply", "--spec", str(SPEC), env={"STREAMSCORE_REDIS_URL": url}
    )
    assert code == 1
    assert f"cannot reach the Redis at {url}" in one_line_error(stderr)


def test_a_redis_that_never_answers_is_given_up_after_the_connect_timeout(
    silent_port: int, startup: float
) -> None:
    env = {
        "STREAMSCORE_REDIS_URL": f"redis://:secret-password@127.0.0.1:{silent_port}/0",
        "STREAMSCORE_METRICS_PORT": "0",
        "STREAMSCORE_KAFKA_CONNECT_TIMEOUT_SECONDS": "1",
    }
    code, _, stderr, elapsed = run("worker", "--spec", str(SPEC), env=env)
    assert code == 1
    line = one_line_error(stderr)
    assert "STREAMSCORE_REDIS_URL" in line
    assert "secret-password" not in line
    assert elapsed < startup + 15


def test_a_metrics_port_in_use_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {"STREAMSCORE_METRICS_PORT": str(port)}
        code, _, stderr, _ = run("worker", "--spec", str(SPEC), env=env)
    assert code == 1
    line = one_line_error(stderr)
    assert f"127.0.0.1:{port} is in use" in line
    assert "STREAMSCORE_METRICS_PORT" in line


def spec_copy(tmp_path: Path, text: str) -> Path:
    """The card-fraud spec in ``tmp_path``, its Feast repo still found."""
    repo = ROOT / "features" / "card_fraud"
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace("repo: ../../features/card_fraud", f"repo: {repo}"))
    return path


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(SPEC.read_text().replace("card_fraud", "card_fraud_é").encode("latin-1"))
    code, _, stderr, _ = run("worker", "--spec", str(path))
    assert code == 2
    line = one_line_error(stderr)
    assert "is not UTF-8 text" in line
    assert "save it as UTF-8" in line


def test_an_invalid_spec_is_one_line(tmp_path: Path) -> None:
    text = SPEC.read_text().replace("max_size: 1024", "max_size: -1")
    path = spec_copy(tmp_path, text.replace("max_wait_ms: 5", "max_wait_ms: -5"))
    code, _, stderr, _ = run("worker", "--spec", str(path))
    assert code == 2
    line = one_line_error(stderr)
    assert "batch.max_size" in line
    assert "batch.max_wait_ms" in line


def test_a_misspelled_feature_ref_is_not_in_the_feast_repo(tmp_path: Path) -> None:
    text = SPEC.read_text().replace(
        "    - card_stats:txn_count_24h", "    - card_stats:txn_cnt_24h"
    )
    path = spec_copy(tmp_path, text)
    code, _, stderr, _ = run("worker", "--spec", str(path))
    assert code == 2
    line = one_line_error(stderr)
    assert "'card_stats:txn_cnt_24h' is not in the Feast repo" in line
    assert "did you mean 'card_stats:txn_count_24h'?" in line


def test_a_misspelled_variable_is_reported_with_the_closest_setting() -> None:
    env = {"STREAMSCORE_METRICS_PROT": "9500"}
    code, _, stderr, _ = run("worker", "--spec", "no-such-spec.yaml", env=env)
    assert code == 2
    warning, error = stderr.strip().splitlines()
    assert warning.startswith("warning: STREAMSCORE_METRICS_PROT is not a streamscore setting")
    assert "did you mean STREAMSCORE_METRICS_PORT?" in warning
    assert "cannot read pipeline spec" in error


def test_invalid_settings_are_one_line() -> None:
    env = {"STREAMSCORE_METRICS_PORT": "ninety", "STREAMSCORE_LOG_LEVEL": "loud"}
    code, _, stderr, _ = run("worker", "--spec", str(SPEC), env=env)
    assert code == 2
    line = one_line_error(stderr)
    assert "STREAMSCORE_METRICS_PORT='ninety'" in line
    assert "STREAMSCORE_LOG_LEVEL='loud'" in line


def test_version_comes_from_the_installed_distribution() -> None:
    code, stdout, _, _ = run("--version")
    assert code == 0
    assert stdout.strip() == f"streamscore {metadata.version('streamscore')}"


# -- validate ------------------------------------------------------------------------------


def register_fitting_models(registry_dir: Path) -> None:
    """The card-fraud spec's primary and shadow: tiny models on its exact input layout."""
    columns = tuple(load_spec(SPEC).input_columns())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, len(columns))).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    registry = ModelRegistry(registry_dir)
    for name in ("fraud_gbt", "fraud_lr"):
        estimator, _ = make_estimator(TrainModel(name=name, estimator="logistic_regression"), 0)
        onnx = to_onnx_bytes(estimator.fit(x, y), len(columns), "classification")
        registry.register(name, onnx, ManifestFields(
            training_data=TrainingData(path="/data/train.parquet", sha256="ab" * 32, rows=60),
            input_columns=columns, task="classification", metrics={"roc_auc": 0.5},
            estimator="logistic_regression", classes=(0, 1),
        ))  # fmt: skip


def test_validate_passes_a_good_spec_without_any_server(tmp_path: Path) -> None:
    register_fitting_models(tmp_path / "registry")
    env = {
        "STREAMSCORE_MODEL_DIR": "registry",  # relative: resolved against the working dir
        "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "STREAMSCORE_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    code, stdout, stderr, elapsed = run("validate", "--spec", str(SPEC), env=env, cwd=tmp_path)
    assert code == 0, stdout + stderr
    lines = stdout.strip().splitlines()
    assert all(line.startswith("✓") for line in lines[:-1]), stdout
    assert f"model registry {tmp_path.resolve() / 'registry'}" in stdout
    assert "model fraud_gbt@champion (primary): version 1 loads" in stdout
    assert "model fraud_lr@champion (shadow): version 1 loads" in stdout
    assert "feature service 'card_fraud_v1' serves exactly the refs" in stdout
    assert lines[-1].startswith("all ")


def test_validate_reports_each_failure_and_exits_non_zero(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    register_fitting_models(registry)
    text = SPEC.read_text()
    # A ref misspelled everywhere (so the spec itself is consistent), a version that is no
    # registered one, and a misspelled variable.
    text = text.replace("card_stats:chargeback_count_90d", "card_stats:chargebacks_90d")
    text = text.replace("  - name: fraud_lr\n\n", "  - name: fraud_lr\n    version: 7\n\n")
    path = spec_copy(tmp_path, text)
    env = {"STREAMSCORE_MODEL_DIR": str(registry), "STREAMSCORE_MODEL_DIRR": "x"}
    code, stdout, _, _ = run("validate", "--spec", str(path), env=env)
    assert code == 1
    failed = [line for line in stdout.splitlines() if line.startswith("✗")]
    assert any("STREAMSCORE_MODEL_DIRR" in line for line in failed), stdout
    assert any("'card_stats:chargebacks_90d' is not in the Feast repo" in line for line in failed)
    assert any("feature service 'card_fraud_v1' does not serve exactly" in line for line in failed)
    assert any("model fraud_gbt@champion (primary)" in line and "refused (columns)" in line
               for line in failed), stdout  # fmt: skip
    # `version: 7`, a YAML int, is version 7 (the spec loads), which is not registered.
    assert any("model fraud_lr@7 (shadow)" in line and "'7' not found" in line for line in failed)
    assert stdout.strip().splitlines()[-1].endswith("checks failed")
