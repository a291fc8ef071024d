"""``streamscore models`` list/promote/rollback against a temp registry of real ONNX
models, and the AliasWatcher a worker uses to follow those moves."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models.cli import models_app
from models.errors import ModelNotFound, RegistryError
from models.estimators import make_estimator, to_onnx_bytes
from models.manifest import ManifestFields, TrainingData
from models.registry import CHALLENGER, CHAMPION, ModelRegistry
from models.scorer import OnnxScorer
from models.watch import AliasWatcher
from streams.spec import TrainModel

runner = CliRunner()
COLUMNS = ("amount", "count")


@pytest.fixture(scope="module")
def onnx_models() -> list[bytes]:
    """Three tiny logistic regressions, each with its own coefficients."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    out = []
    for c in (0.1, 1.0, 10.0):
        spec = TrainModel(name="fraud", estimator="logistic_regression", params={"C": c})
        estimator, _ = make_estimator(spec, seed=0)
        out.append(to_onnx_bytes(estimator.fit(x, y), 2, "classification"))
    return out


def fields(auc: float) -> ManifestFields:
    return ManifestFields(
        training_data=TrainingData(path="/data/train.parquet", sha256="ab" * 32, rows=80),
        input_columns=COLUMNS,
        task="classification",
        metrics={"roc_auc": auc, "log_loss": 0.123456},
        estimator="logistic_regression",
        classes=(0, 1),
    )


@pytest.fixture
def registry(tmp_path: Path, onnx_models: list[bytes]) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    for i, onnx in enumerate(onnx_models):
        registry.register("fraud", onnx, fields(0.9 + i / 100))
    registry.register("churn", onnx_models[0], fields(0.7))
    return registry


def invoke(registry: ModelRegistry, *args: str) -> tuple[int, str]:
    env = {"STREAMSCORE_MODEL_DIR": str(registry.root), "COLUMNS": "120"}
    result = runner.invoke(models_app, list(args), env=env)
    return result.exit_code, result.output


def test_list_shows_versions_created_metrics_and_aliases(registry: ModelRegistry) -> None:
    registry.set_alias("fraud", "canary", 3)
    code, out = invoke(registry, "list")
    assert code == 0, out
    assert re.search(r"^\s*fraud\s+1\s+champion\s", out, re.MULTILINE), out
    assert re.search(r"^\s*fraud\s+2\s+\d{4}-", out, re.MULTILINE), out  # no alias on 2
    assert re.search(r"^\s*fraud\s+3\s+canary\s", out, re.MULTILINE), out
    assert re.search(r"^\s*churn\s+1\s+champion\s", out, re.MULTILINE), out
    created = registry.resolve("fraud", 1).manifest.created  # '2026-..T12:34:56.789+00:00'
    assert created[:10] + " " + created[11:16] in out
    assert "roc_auc=0.92" in out and "log_loss=0.1235" in out and "logistic_regression" in out
    code, only = invoke(registry, "list", "churn")
    assert code == 0 and "churn" in only and "fraud" not in only.replace(str(registry.root), "")


def test_list_of_empty_and_unknown(tmp_path: Path) -> None:
    empty = ModelRegistry(tmp_path / "nothing")
    assert invoke(empty, "list") == (0, f"no models in {empty.root}\n")
    code, out = invoke(empty, "list", "fraud")
    assert code == 2 and "model 'fraud' not found" in out


def test_list_flags_a_damaged_version(registry: ModelRegistry) -> None:
    (registry.root / "fraud" / "2" / "model.onnx").write_bytes(b"swapped")
    code, out = invoke(registry, "list", "fraud")
    assert code == 0 and "damaged" in out and "sha256" in out


def test_promote_moves_the_alias_and_the_watcher_sees_it(registry: ModelRegistry) -> None:
    watcher = AliasWatcher(registry, "fraud", CHAMPION)
    assert watcher.version == 1 and watcher.check() is None
    code, out = invoke(registry, "promote", "fraud", "2")
    assert code == 0, out
    assert "fraud: champion -> version 2 (was version 1)" in out
    assert registry.aliases("fraud")[CHAMPION] == 2
    assert watcher.check() == 2
    assert watcher.check() is None  # reported once
    # What the worker does with it: a scorer for the new version.
    scorer = OnnxScorer.from_version(registry.resolve("fraud", 2))
    assert scorer.score(np.zeros((3, 2), dtype=np.float32)).shape == (3,)


def test_promote_to_another_alias_and_noop(registry: ModelRegistry) -> None:
    code, out = invoke(registry, "promote", "fraud", "3", "--alias", "canary")
    assert code == 0 and "canary -> version 3 (was nothing)" in out
    history = registry.alias_history("fraud")
    code, out = invoke(registry, "promote", "fraud", "3", "--alias", "canary")
    assert code == 0 and "already points at version 3" in out
    assert registry.alias_history("fraud") == history  # no empty move recorded
    assert registry.aliases("fraud") == {CHAMPION: 1, "canary": 3}


def test_promoting_the_challengers_version_to_champion_retires_the_challenger(
    registry: ModelRegistry,
) -> None:
    registry.set_alias("fraud", CHALLENGER, 3)
    code, out = invoke(registry, "promote", "fraud", "2")  # another version: it stays
    assert code == 0 and "challenger alias removed" not in out
    assert registry.aliases("fraud") == {CHAMPION: 2, CHALLENGER: 3}
    code, out = invoke(registry, "promote", "fraud", "3")
    assert code == 0, out
    assert "fraud: challenger alias removed (version 3 serves as champion)" in out
    assert registry.aliases("fraud") == {CHAMPION: 3}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["promote", "fraud", "9"], r"cannot promote fraud version 9 .*no version 9 .*\[1, 2, 3\]"),
        (["promote", "nope", "1"], r"cannot promote nope version 1 .*model 'nope' not found"),
        (["promote", "fraud", "2", "--alias", "9lives"], r"alias '9lives' of model 'fraud'"),
        (["promote", "fraud", "0"], r"Invalid value"),
        (["promote", "fraud", "two"], r"Invalid value"),
    ],
)
def test_promote_errors_name_model_and_version(
    registry: ModelRegistry, args: list[str], expected: str
) -> None:
    code, out = invoke(registry, *args)
    assert code == 2
    assert re.search(expected, " ".join(out.split())), out
    assert registry.aliases("fraud") == {CHAMPION: 1}


def test_promote_refuses_a_damaged_artifact(registry: ModelRegistry) -> None:
    (registry.root / "fraud" / "3" / "model.onnx").write_bytes(b"tampered")
    code, out = invoke(registry, "promote", "fraud", "3")
    assert code == 2 and "version 3" in out and "does not match" in out
    assert registry.aliases("fraud") == {CHAMPION: 1}


def test_rollback_undoes_the_last_change_and_the_watcher_follows(registry: ModelRegistry) -> None:
    watcher = AliasWatcher(registry, "fraud", CHAMPION)
    assert invoke(registry, "promote", "fraud", "2")[0] == 0
    assert invoke(registry, "promote", "fraud", "3")[0] == 0
    assert watcher.check() == 3  # two moves between checks: the latest
    code, out = invoke(registry, "rollback", "fraud")
    assert code == 0 and "fraud: champion -> version 2 (was version 3)" in out
    assert watcher.check() == 2
    # A rollback is itself a change: a second one restores what it undid.
    code, out = invoke(registry, "rollback", "fraud")
    assert code == 0 and "-> version 3 (was version 2)" in out
    moves = [(c.version, c.previous) for c in registry.alias_history("fraud")]
    assert moves == [(1, None), (2, 1), (3, 2), (2, 3), (3, 2)]


def test_rollback_without_an_earlier_version_is_a_clear_error(registry: ModelRegistry) -> None:
    code, out = invoke(registry, "rollback", "churn")
    flat = " ".join(out.split())
    assert code == 2
    assert "cannot roll back churn 'champion'" in flat
    assert "points at version 1 and has no earlier version" in flat
    code, out = invoke(registry, "rollback", "fraud", "--alias", "canary")
    assert code == 2 and "alias 'canary' has never been set" in " ".join(out.split())
    code, out = invoke(registry, "rollback", "nope")
    assert code == 2 and "model 'nope' not found" in out


def test_rollback_refuses_a_damaged_target(registry: ModelRegistry) -> None:
    registry.set_alias("fraud", CHAMPION, 2)
    (registry.root / "fraud" / "1" / "model.onnx").write_bytes(b"tampered")
    code, out = invoke(registry, "rollback", "fraud")
    assert code == 2 and "version 1" in out and "does not match" in out
    assert registry.aliases("fraud")[CHAMPION] == 2


def test_bad_settings_exit_2(registry: ModelRegistry) -> None:
    result = runner.invoke(
        models_app, ["list"], env={"STREAMSCORE_KAFKA_FETCH_MAX_WAIT_MS": "soon"}
    )
    assert result.exit_code == 2 and "STREAMSCORE_KAFKA_FETCH_MAX_WAIT_MS" in result.output


def test_watcher_reads_nothing_while_the_file_is_unchanged(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = AliasWatcher(registry, "fraud", CHAMPION)
    reads: list[str] = []
    real = registry.alias_version

    def spy(name: str, alias: str) -> int:
        reads.append(name)
        return real(name, alias)

    monkeypatch.setattr(registry, "alias_version", spy)
    for _ in range(100):
        assert watcher.check() is None
    assert reads == []
    registry.set_alias("fraud", "canary", 3)  # the file changes, the champion does not
    assert watcher.check() is None and reads == ["fraud"]
    assert watcher.check() is None and reads == ["fraud"]


def test_watcher_baseline_and_errors(registry: ModelRegistry) -> None:
    # The worker resolved version 3, then the alias moved to 1 before the watcher started.
    behind = AliasWatcher(registry, "fraud", CHAMPION, current=3)
    assert behind.check() == 1
    assert behind.check() is None
    in_step = AliasWatcher(registry, "fraud", CHAMPION, current=1)
    assert in_step.check() is None
    registry.set_alias("fraud", CHAMPION, 2)
    assert in_step.check() == 2
    with pytest.raises(ModelNotFound, match="'fraud'.*'staging'.*no such alias"):
        AliasWatcher(registry, "fraud", "staging")
    with pytest.raises(ModelNotFound, match="'nope'"):
        AliasWatcher(registry, "nope", CHAMPION)
    with pytest.raises(ModelNotFound, match="'staging'"):
        AliasWatcher(registry, "fraud", "staging", current=1)
    # A move to a damaged version is reported once, like any move: whether it can serve
    # is the follower's question (tests/unit/test_model_refusal.py).
    watcher = AliasWatcher(registry, "fraud", CHAMPION)
    (registry.root / "fraud" / "3" / "model.onnx").write_bytes(b"tampered")
    registry.set_alias("fraud", CHAMPION, 3)
    assert watcher.check() == 3 and watcher.check() is None
    # An unreadable aliases.json raises on every check until it is fixed.
    aliases = registry.root / "fraud" / "aliases.json"
    good = aliases.read_bytes()
    aliases.write_bytes(b"{not json")
    for _ in range(2):
        with pytest.raises(RegistryError, match="cannot read the aliases of model 'fraud'"):
            watcher.check()
    aliases.write_bytes(good.replace(b'"champion": 3', b'"champion": 1'))
    assert watcher.check() == 1 and watcher.version == 1
