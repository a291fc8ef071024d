"""A version that cannot serve never reaches a worker's scoring path.

Three bad artifacts, each once accepted by ``streamscore models promote`` and then fatal to
every worker following the alias: a truncated ONNX file registered with its own (matching)
sha256, a valid ONNX of another input width, and input columns that differ from the spec's
layout. Promote and rollback refuse them; a worker's alias follower refuses them and keeps
serving; a worker starting on a bad alias serves the newest earlier good version.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from models.cli import models_app
from models.errors import ModelRefused, NoServableVersion
from models.fitness import REFUSAL_REASONS, Layout, load_checked, load_serving
from models.manifest import ManifestFields, TrainingData
from models.registry import CHAMPION, ModelRegistry
from streams.metrics import Metrics
from streams.scoring.pipeline import ScoringPipeline
from streams.shadows.model_follow import AliasFollower, start_serving
from tests.unit.test_pipeline import SPEC, InMemoryFeatures, message

NAME = SPEC.model.name  # unit_lr
COLUMNS = tuple(SPEC.input_columns())  # amount, kind=a, kind=b, stats__spend
GOOD, GOOD_TOO, TRUNCATED, OTHER_WIDTH, OTHER_COLUMNS = 1, 2, 3, 4, 5
#: The three bad versions, the reason a refusal gives and what its message says.
BAD = {
    TRUNCATED: ("unloadable", "ONNX Runtime cannot load the model"),
    OTHER_WIDTH: ("width", "model input width is 3 but the manifest lists 4 input columns"),
    OTHER_COLUMNS: ("columns", "does not fit spec 'unit': input columns differ"),
}
runner = CliRunner()


def onnx_of_width(width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, width)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    return bytes(to_onnx(model, x[:1], options={id(model): {"zipmap": False}}).SerializeToString())


def fields(columns: tuple[str, ...] = COLUMNS) -> ManifestFields:
    return ManifestFields(
        training_data=TrainingData(path="/data/train.parquet", sha256="ab" * 32, rows=60),
        input_columns=columns,
        task="classification",
        metrics={"roc_auc": 0.9},
        estimator="logistic_regression",
        classes=(0, 1),
    )


@pytest.fixture(scope="module")
def artifacts() -> tuple[bytes, bytes, bytes]:
    """Two good models of the spec's width, and one of width 3."""
    return onnx_of_width(4, seed=1), onnx_of_width(4, seed=2), onnx_of_width(3, seed=3)


@pytest.fixture
def registry(tmp_path: Path, artifacts: tuple[bytes, bytes, bytes]) -> ModelRegistry:
    good, good_too, narrow = artifacts
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(NAME, good, fields())  # v1, champion
    registry.register(NAME, good_too, fields())  # v2
    # v3: cut in half, registered as it is, so its sha256 matches its manifest.
    registry.register(NAME, good[: len(good) // 2], fields())
    registry.register(NAME, narrow, fields())  # v4: width 3, manifest lists 4 columns
    swapped = (COLUMNS[1], COLUMNS[0], *COLUMNS[2:])
    registry.register(NAME, good, fields(swapped))  # v5: loads, but not the spec's order
    return registry


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(SPEC.model_dump(mode="json", exclude_none=True)))
    return path


class RecordingSink:
    """The actions topic, in memory: promote and rollback with --spec record here."""

    def __init__(self, settings: object) -> None:
        pass

    def check(self) -> None:
        pass

    def publish(self, spec, records: list[dict]) -> None:
        RECORDED.extend(records)


RECORDED: list[dict] = []


@pytest.fixture(autouse=True)
def in_memory_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    RECORDED.clear()
    monkeypatch.setattr("models.cli.action_sink", RecordingSink)


def invoke(registry: ModelRegistry, *args: str) -> tuple[int, str]:
    env = {"STREAMSCORE_MODEL_DIR": str(registry.root), "COLUMNS": "80"}
    result = runner.invoke(models_app, list(args), env=env)
    return result.exit_code, result.output


# --- promote and rollback ---------------------------------------------------------------


@pytest.mark.parametrize("version", sorted(BAD))
def test_promote_refuses_each_bad_artifact_in_one_line(
    registry: ModelRegistry, spec_file: Path, version: int
) -> None:
    history = registry.alias_history(NAME)
    code, out = invoke(registry, "promote", NAME, str(version), "--spec", str(spec_file))
    reason, detail = BAD[version]
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1, out  # one line, even on an 80-column terminal
    assert out.startswith(f"error: cannot promote {NAME} version {version} to 'champion': ")
    assert f"version {version} refused ({reason}): {detail}" in out
    assert registry.aliases(NAME) == {CHAMPION: GOOD}
    assert registry.alias_history(NAME) == history
    assert RECORDED == []  # a refused version moves nothing and records nothing


@pytest.mark.parametrize("version", [TRUNCATED, OTHER_WIDTH])
def test_promote_without_a_spec_still_loads_and_checks_the_width(
    registry: ModelRegistry, version: int
) -> None:
    code, out = invoke(registry, "promote", NAME, str(version))
    assert code == 2 and f"refused ({BAD[version][0]})" in out
    assert registry.aliases(NAME) == {CHAMPION: GOOD}


def test_promote_without_a_spec_says_the_columns_were_not_checked(
    registry: ModelRegistry, spec_file: Path
) -> None:
    code, out = invoke(registry, "promote", NAME, str(OTHER_COLUMNS))
    assert code == 0, out
    assert "input columns not checked against a pipeline (pass --spec)" in out
    code, out = invoke(registry, "promote", NAME, str(GOOD_TOO), "--spec", str(spec_file))
    assert code == 0 and "champion -> version 2 (was version 5)" in out
    assert "not checked" not in out
    assert "note: promotion not recorded on any actions topic (pass --spec)" not in out
    (record,) = RECORDED  # the first promote had no --spec: nothing to record it on
    assert record["action"] == "promotion" and record["pipeline"] == "unit"
    assert (record["model"], record["from_version"], record["to_version"]) == (NAME, 5, 2)
    assert record["evidence"] is None and "@" in record["decided_by"]


def test_promote_refuses_specs_of_which_none_uses_the_model(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    doc = SPEC.model_dump(mode="json", exclude_none=True)
    doc["model"]["name"] = "someone_else"
    other.write_text(yaml.safe_dump(doc))
    code, out = invoke(registry, "promote", NAME, str(GOOD_TOO), "--spec", str(other))
    assert code == 2 and f"no spec given uses model '{NAME}' (specs: 'unit')" in out
    assert registry.aliases(NAME) == {CHAMPION: GOOD}


def test_rollback_refuses_to_return_to_a_bad_version(
    registry: ModelRegistry, spec_file: Path
) -> None:
    registry.set_alias(NAME, CHAMPION, OTHER_COLUMNS)  # moved before promote checked anything
    registry.set_alias(NAME, CHAMPION, GOOD_TOO)
    code, out = invoke(registry, "rollback", NAME, "--spec", str(spec_file))
    assert code == 2 and "version 5 refused (columns)" in out
    assert registry.aliases(NAME) == {CHAMPION: GOOD_TOO}
    code, out = invoke(registry, "rollback", NAME)  # without the spec, columns go unchecked
    assert code == 0 and "-> version 5 (was version 2)" in out and "not checked" in out


# --- what a worker serves at start ------------------------------------------------------


def test_a_bad_alias_at_start_serves_the_newest_earlier_good_version(
    registry: ModelRegistry,
) -> None:
    for version in (GOOD_TOO, TRUNCATED, OTHER_COLUMNS, OTHER_WIDTH):
        registry.set_alias(NAME, CHAMPION, version)
    serving = load_serving(registry, NAME, CHAMPION, [Layout.of(SPEC)])
    assert (serving.scorer.version, serving.alias, serving.alias_version) == (2, CHAMPION, 4)
    assert serving.refused is not None and serving.refused.reason == "width"
    assert [r.version for r in serving.passed_over] == [OTHER_COLUMNS, TRUNCATED]
    healthy = load_serving(registry, NAME, "1", [Layout.of(SPEC)])
    assert healthy.scorer.version == 1 and healthy.alias is None and healthy.refused is None


def test_no_servable_version_fails_in_one_clear_line(registry: ModelRegistry) -> None:
    with pytest.raises(ModelRefused, match=r"version 3 refused \(unloadable\)"):
        load_serving(registry, NAME, str(TRUNCATED), [Layout.of(SPEC)])  # pinned: no fallback
    lonely = registry.register("lonely", b"\x08\x07 not onnx", fields())  # its own champion
    registry.set_alias(NAME, "canary", OTHER_WIDTH)
    registry.set_alias(NAME, "canary", TRUNCATED)
    with pytest.raises(NoServableVersion) as caught:
        load_serving(registry, lonely.name, CHAMPION, [Layout.of(SPEC)])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("model 'lonely' version 1 refused (unloadable): ONNX Runtime")
    assert message.endswith(
        "no earlier version of alias 'champion' can serve instead (tried: none)"
    )
    with pytest.raises(NoServableVersion, match=r"\(tried: 4 \(width\)\)$"):
        load_serving(registry, NAME, "canary", [Layout.of(SPEC)])


def test_start_serving_logs_and_flags_the_refusal(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    labels = {"pipeline": "unit", "model": NAME, "alias": CHAMPION}
    start_serving(registry, SPEC, SPEC.model, metrics)
    assert sample("streamscore_model_refused_version", labels) == 0
    for reason in REFUSAL_REASONS:  # every series exists from the start
        assert sample("streamscore_model_refusals_total", {**labels, "reason": reason}) == 0
    registry.set_alias(NAME, CHAMPION, TRUNCATED)
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    with caplog.at_level(logging.WARNING, logger="streams.shadows.model_follow"):
        serving = start_serving(registry, SPEC, SPEC.model, metrics)
    assert serving.scorer.version == GOOD
    assert sample("streamscore_model_refused_version", labels) == TRUNCATED
    assert sample("streamscore_model_refusals_total", {**labels, "reason": "unloadable"}) == 1
    (record,) = caplog.records
    assert "model 'unit_lr' version 3 refused (unloadable)" in record.getMessage()
    assert "serving version 1 instead" in record.getMessage()


# --- a running worker: the alias follower and the scoring pipeline ----------------------


async def test_a_running_worker_refuses_bad_versions_and_keeps_scoring(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    serving = start_serving(registry, SPEC, SPEC.model, metrics)
    follower = AliasFollower(registry, SPEC, serving, metrics)
    pipeline = ScoringPipeline(SPEC, InMemoryFeatures(), serving.scorer, metrics)
    sample = metrics.registry.get_sample_value
    labels = {"pipeline": "unit", "model": NAME, "alias": CHAMPION}
    offsets = iter(range(10**6))

    async def versions_scored() -> set[int]:
        """What the worker's timer does (swap if the follower says so), then one batch."""
        new = follower.check()
        if new is not None:
            pipeline.swap_scorer(new)
        batch = [
            message(i, {"id": f"e{i}", "user": "u1", "amount": 5, "kind": "a"})
            for i in (next(offsets) for _ in range(3))
        ]
        scored = await pipeline.score_batch(batch)
        return {orjson.loads(r.value)["model_version"] for r in scored.predictions}

    assert await versions_scored() == {GOOD}
    with caplog.at_level(logging.INFO, logger="streams.shadows.model_follow"):
        for version, (reason, _) in BAD.items():
            registry.set_alias(NAME, CHAMPION, version)
            for _ in range(3):  # checked every second: said and counted once
                assert await versions_scored() == {GOOD}
            assert sample("streamscore_model_refused_version", labels) == version
            assert sample("streamscore_model_refusals_total", {**labels, "reason": reason}) == 1
        registry.set_alias(NAME, CHAMPION, TRUNCATED)  # back to one it refused: not said again
        assert await versions_scored() == {GOOD}
        assert sample("streamscore_model_refused_version", labels) == TRUNCATED
        assert sample("streamscore_model_refusals_total", {**labels, "reason": "unloadable"}) == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 3
        for warning, (version, (reason, detail)) in zip(warnings, BAD.items(), strict=True):
            assert f"version {version} refused ({reason}): {detail}" in warning
            assert "still serving version 1" in warning

        registry.set_alias(NAME, CHAMPION, GOOD)  # rolled back to what it serves
        assert await versions_scored() == {GOOD}
        assert sample("streamscore_model_refused_version", labels) == 0
        registry.set_alias(NAME, CHAMPION, GOOD_TOO)  # a good version is swapped in
        assert await versions_scored() == {GOOD_TOO}
    info = {"pipeline": "unit", "role": "primary", "model": NAME}
    assert sample("streamscore_model_info", {**info, "version": "2"}) == 1
    assert sample("streamscore_model_info", {**info, "version": "1"}) is None


def test_an_unreadable_alias_file_is_said_once_and_the_worker_keeps_serving(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    follower = AliasFollower(
        registry, SPEC, start_serving(registry, SPEC, SPEC.model, metrics), metrics
    )
    aliases = registry.root / NAME / "aliases.json"
    good = aliases.read_bytes()
    aliases.write_bytes(b"{half a file")
    with caplog.at_level(logging.WARNING, logger="streams.shadows.model_follow"):
        assert [follower.check() for _ in range(3)] == [None, None, None]
    (record,) = caplog.records
    assert "cannot follow alias 'champion'" in record.getMessage()
    aliases.write_bytes(good.replace(b'"champion": 1', b'"champion": 2'))
    new = follower.check()
    assert new is not None and new.version == GOOD_TOO


def test_load_checked_runs_what_it_loads(registry: ModelRegistry) -> None:
    scorer = load_checked(registry, NAME, GOOD, [Layout.of(SPEC)])
    assert scorer.score(np.zeros((2, 4), dtype=np.float32)).shape == (2,)
    with pytest.raises(ModelRefused, match=r"version 9 refused \(missing\).*no version 9"):
        load_checked(registry, NAME, 9)
    (registry.root / NAME / "2" / "model.onnx").write_bytes(b"swapped")
    with pytest.raises(ModelRefused, match=r"version 2 refused \(damaged\).*sha256"):
        load_checked(registry, NAME, GOOD_TOO)
