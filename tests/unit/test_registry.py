"""The file registry: versions, aliases, integrity checks and atomic publication."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from models.errors import AliasMoved, ModelIntegrityError, ModelNotFound, RegistryError
from models.manifest import ManifestFields, TrainingData
from models.registry import CHALLENGER, CHAMPION, ModelRegistry

ONNX = b"not really onnx: the registry stores bytes"


def fields(**overrides: object) -> ManifestFields:
    base: dict[str, object] = {
        "training_data": TrainingData(path="/data/train.parquet", sha256="ab" * 32, rows=10),
        "input_columns": ("amount", "user__spend_7d"),
        "task": "classification",
        "metrics": {"roc_auc": 0.9},
        "estimator": "logistic_regression",
        "params": {"C": 1.0},
        "classes": (0, 1),
    }
    return ManifestFields.model_validate({**base, **overrides})


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_versions_increase_and_first_is_champion(registry: ModelRegistry) -> None:
    first = registry.register("fraud", ONNX, fields())
    second = registry.register("fraud", ONNX + b"2", fields())
    other = registry.register("churn", ONNX, fields())
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert registry.versions("fraud") == [1, 2]
    assert registry.names() == ["churn", "fraud"]
    assert registry.aliases("fraud") == {CHAMPION: 1}  # a new version is not auto-promoted
    assert registry.resolve("fraud", CHAMPION).version == 1


def test_manifest_is_complete_on_disk(registry: ModelRegistry) -> None:
    version = registry.register("fraud", ONNX, fields())
    on_disk = json.loads((version.path / "manifest.json").read_text())
    assert on_disk["name"] == "fraud" and on_disk["version"] == 1
    assert on_disk["created"].endswith("+00:00")
    assert len(on_disk["onnx_sha256"]) == 64
    for key in ("training_data", "input_columns", "task", "metrics", "estimator", "params"):
        assert key in on_disk
    assert (version.path / "model.onnx").read_bytes() == ONNX


def test_resolve_by_number_alias_and_int(registry: ModelRegistry) -> None:
    registry.register("fraud", ONNX, fields())
    registry.register("fraud", ONNX + b"2", fields())
    registry.set_alias("fraud", "canary", 2)
    assert registry.resolve("fraud", "2").version == 2
    assert registry.resolve("fraud", 2).read_onnx() == ONNX + b"2"
    assert registry.resolve("fraud", "canary").version == 2
    assert registry.resolve("fraud", "champion").manifest.input_columns == (
        "amount",
        "user__spend_7d",
    )


def test_alias_history_records_previous_version(registry: ModelRegistry) -> None:
    registry.register("fraud", ONNX, fields())
    registry.register("fraud", ONNX, fields())
    registry.set_alias("fraud", CHAMPION, 2)
    moves = [(c.alias, c.version, c.previous) for c in registry.alias_history("fraud")]
    assert moves == [(CHAMPION, 1, None), (CHAMPION, 2, 1)]
    assert registry.resolve("fraud", CHAMPION).version == 2


def test_set_alias_with_expected_is_a_compare_and_set(registry: ModelRegistry) -> None:
    for payload in (ONNX, ONNX + b"2", ONNX + b"3"):
        registry.register("fraud", payload, fields())
    registry.set_alias("fraud", CHAMPION, 2, expected=1)  # champion was 1: moves
    # A second promoter that read "1" before the first one wrote: refused, nothing written.
    with pytest.raises(AliasMoved, match="expected version 1, found version 2") as caught:
        registry.set_alias("fraud", CHAMPION, 3, expected=1)
    assert (caught.value.expected, caught.value.found) == (1, 2)
    assert registry.aliases("fraud")[CHAMPION] == 2
    assert len(registry.alias_history("fraud")) == 2
    registry.set_alias("fraud", "canary", 3, expected=None)  # "not set yet" is a value too
    with pytest.raises(AliasMoved, match="expected nothing, found version 3"):
        registry.set_alias("fraud", "canary", 1, expected=None)


def test_a_promoted_challenger_is_retired_only_while_it_names_the_promoted_version(
    registry: ModelRegistry,
) -> None:
    for payload in (ONNX, ONNX + b"2", ONNX + b"3"):
        registry.register("fraud", payload, fields())
    registry.set_alias("fraud", CHALLENGER, 2)
    registry.set_alias("fraud", CHAMPION, 2)
    assert registry.retire_challenger("fraud", 2) is True
    assert registry.aliases("fraud") == {CHAMPION: 2}
    last = registry.alias_history("fraud")[-1]
    assert (last.alias, last.version, last.previous) == (CHALLENGER, None, 2)
    assert registry.retire_challenger("fraud", 2) is False  # none left: nothing to do
    # A newer challenger (retrained meanwhile) stays: it is not the promoted version.
    registry.set_alias("fraud", CHALLENGER, 3)
    assert registry.retire_challenger("fraud", 2) is False
    assert registry.aliases("fraud") == {CHAMPION: 2, CHALLENGER: 3}


def test_concurrent_promotions_from_the_same_reading_move_the_alias_once(
    registry: ModelRegistry,
) -> None:
    for payload in (ONNX, ONNX + b"2", ONNX + b"3", ONNX + b"4"):
        registry.register("fraud", payload, fields())
    read = registry.aliases("fraud")[CHAMPION]
    outcomes: list[str] = []
    start = threading.Barrier(3)

    def promote(version: int) -> None:
        start.wait()
        try:
            registry.set_alias("fraud", CHAMPION, version, expected=read)
            outcomes.append("moved")
        except AliasMoved:
            outcomes.append("refused")

    threads = [threading.Thread(target=promote, args=(v,)) for v in (2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["moved", "refused", "refused"]
    assert len(registry.alias_history("fraud")) == 2


def test_unknown_name_names_what_was_asked(registry: ModelRegistry) -> None:
    registry.register("fraud", ONNX, fields())
    with pytest.raises(ModelNotFound, match="'nope'") as caught:
        registry.resolve("nope", "champion")
    assert caught.value.name == "nope"
    assert str(registry.root) in str(caught.value)
    assert "fraud" in str(caught.value)  # lists the models that do exist


def test_unknown_alias_and_version_name_what_was_asked(registry: ModelRegistry) -> None:
    registry.register("fraud", ONNX, fields())
    with pytest.raises(ModelNotFound, match="'fraud'.*'staging'.*champion->1") as alias:
        registry.resolve("fraud", "staging")
    assert alias.value.ref == "staging"
    assert "aliases.json" in str(alias.value)
    with pytest.raises(ModelNotFound, match="no version 7 .*versions: \\[1\\]"):
        registry.resolve("fraud", "7")
    with pytest.raises(ModelNotFound, match="neither a version number nor an alias"):
        registry.resolve("fraud", "../x")
    with pytest.raises(ModelNotFound, match="no version 9"):
        registry.set_alias("fraud", "canary", 9)


def test_bad_names_are_refused(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="model name '../evil'"):
        registry.register("../evil", ONNX, fields())
    registry.register("fraud", ONNX, fields())
    with pytest.raises(RegistryError, match="alias '3'"):
        registry.set_alias("fraud", "3", 1)  # would be read as a version number


def test_sha_mismatch_is_detected(registry: ModelRegistry) -> None:
    version = registry.register("fraud", ONNX, fields())
    (version.path / "model.onnx").write_bytes(ONNX + b"tampered")
    with pytest.raises(ModelIntegrityError, match="sha256 .* does not match") as caught:
        registry.resolve("fraud", "champion")
    assert caught.value.version == 1
    assert str(version.path) in str(caught.value)


def test_corrupt_manifest_is_an_integrity_error(registry: ModelRegistry) -> None:
    version = registry.register("fraud", ONNX, fields())
    (version.path / "manifest.json").write_text("{")
    with pytest.raises(ModelIntegrityError, match="not a valid manifest"):
        registry.resolve("fraud", "1")


def test_manifest_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="2 classes"):
        fields(classes=(0, 1, 2))
    with pytest.raises(ValueError, match="extra"):
        fields(metrix={})


def test_no_temp_files_left_after_writes(registry: ModelRegistry) -> None:
    registry.register("fraud", ONNX, fields())
    registry.set_alias("fraud", "canary", 1)
    folder = registry.root / "fraud"
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "1", "aliases.json"]
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["manifest.json", "model.onnx"]


def test_failed_publish_leaves_no_version(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register("fraud", ONNX, fields())

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(RegistryError, match="cannot register model 'fraud' version 2"):
        registry.register("fraud", ONNX, fields())
    with pytest.raises(RegistryError, match="'churn' version 1"):
        registry.register("churn", ONNX, fields())
    monkeypatch.undo()
    assert registry.versions("fraud") == [1]
    assert not [p for p in (registry.root / "fraud").iterdir() if p.name.startswith(".staging")]
    assert registry.names() == ["fraud"]  # churn has a folder but no version
    assert registry.register("fraud", ONNX, fields()).version == 2


def test_failed_alias_write_keeps_old_aliases(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register("fraud", ONNX, fields())
    registry.register("fraud", ONNX, fields())
    before = (registry.root / "fraud" / "aliases.json").read_bytes()

    def fail(src: object, dst: object) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(RegistryError, match="cannot write the aliases of model 'fraud'"):
        registry.set_alias("fraud", CHAMPION, 2)
    monkeypatch.undo()
    assert (registry.root / "fraud" / "aliases.json").read_bytes() == before
    assert [p.name for p in (registry.root / "fraud").iterdir() if p.name.endswith(".tmp")] == []


def test_concurrent_registrations_get_distinct_versions(registry: ModelRegistry) -> None:
    got: list[int] = []

    def register() -> None:
        got.append(registry.register("fraud", ONNX, fields()).version)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 9))
    assert registry.aliases("fraud") == {CHAMPION: 1}


def test_empty_root_has_no_names(tmp_path: Path) -> None:
    assert ModelRegistry(tmp_path / "absent").names() == []
