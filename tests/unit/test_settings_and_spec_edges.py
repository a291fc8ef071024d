"""Settings paths are absolute, misspelled variables are named, a version may be a YAML int."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import SpecError
from streams.settings import Settings, unknown_variables
from streams.spec import load_spec_text

SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"


def test_relative_paths_are_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(model_dir=Path("registry"), data_dir=Path("state"))
    assert settings.model_dir == tmp_path.resolve() / "registry"
    assert settings.data_dir == tmp_path.resolve() / "state"
    assert settings.cache_dir.is_absolute()


def test_unknown_variables_name_the_closest_setting() -> None:
    environ = {
        "STREAMSCORE_METRICS_PROT": "1",
        "STREAMSCORE_REDIS_URL": "redis://x",
        "STREAMSCORE_NOTHING_LIKE_IT": "1",
        "OTHER": "1",
    }
    warnings = unknown_variables(environ)
    assert len(warnings) == 2
    assert "STREAMSCORE_METRICS_PROT" in warnings[0]
    assert "did you mean STREAMSCORE_METRICS_PORT?" in warnings[0]
    assert "STREAMSCORE_NOTHING_LIKE_IT" in warnings[1]


@pytest.mark.parametrize("version", ["7", "'7'", "champion"])
def test_a_model_version_may_be_a_yaml_int(version: str) -> None:
    text = SPEC.read_text().replace("  version: champion", f"  version: {version}")
    text = text.replace(
        "\n  - name: fraud_lr\n\n", f"\n  - name: fraud_lr\n    version: {version}\n\n"
    )
    spec = load_spec_text(text, base_dir=SPEC.parent)
    assert spec.model.version == version.strip("'")
    assert spec.shadows[0].version == version.strip("'")


@pytest.mark.parametrize("version", ["0", "true"])
def test_a_version_that_is_no_version_number_is_refused(version: str) -> None:
    text = SPEC.read_text().replace("  version: champion", f"  version: {version}")
    with pytest.raises(SpecError, match="model.version"):
        load_spec_text(text, base_dir=SPEC.parent)
