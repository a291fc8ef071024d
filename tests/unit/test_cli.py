"""The command line stops at once, naming the culprit, on bad settings or a bad spec."""

from __future__ import annotations

import io
from pathlib import Path

from typer.testing import CliRunner

from streams.cli.main import app

runner = CliRunner()
SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"


def test_invalid_setting_names_the_variable() -> None:
    result = runner.invoke(
        app, ["worker", "--spec", str(SPEC)], env={"STREAMSCORE_METRICS_PORT": "ninety"}
    )
    assert result.exit_code == 2
    assert "STREAMSCORE_METRICS_PORT='ninety'" in result.output


def test_a_batch_timeout_shorter_than_the_retry_budget_is_refused() -> None:
    env = {
        "STREAMSCORE_FEATURE_STORE_RETRY_SECONDS": "90",
        "STREAMSCORE_BATCH_TIMEOUT_SECONDS": "60",
    }
    result = runner.invoke(app, ["worker", "--spec", str(SPEC)], env=env)
    assert result.exit_code == 2
    assert "STREAMSCORE_BATCH_TIMEOUT_SECONDS (60) must exceed" in result.output
    assert "STREAMSCORE_FEATURE_STORE_RETRY_SECONDS (90)" in result.output


def test_invalid_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.read_text().replace("max_size: 1024", "max_size: -1"))
    result = runner.invoke(app, ["worker", "--spec", str(spec)])
    assert result.exit_code == 2
    assert "batch.max_size" in result.output


def test_missing_spec_file_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--spec", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read pipeline spec" in result.output


def test_unknown_worker_role_is_a_clear_error() -> None:
    result = runner.invoke(app, ["worker", "--spec", str(SPEC), "--role", "scorer"])
    assert result.exit_code == 2
    assert "--role must be one of all, scoring, learning" in result.output


def test_learning_worker_needs_a_spec_with_labels(tmp_path: Path) -> None:
    eta = Path(__file__).resolve().parents[1] / "specs" / "eta" / "spec.yaml"
    result = runner.invoke(
        app,
        ["worker", "--spec", str(eta), "--role", "learning"],
        env={"STREAMSCORE_METRICS_PORT": "0"},
    )
    assert result.exit_code == 1
    assert "declares no labels" in result.output


def test_compare_reports_a_stored_evaluation_it_cannot_read(monkeypatch) -> None:
    import streams.cli.compare
    import streams.runtime.reach
    from models.evaluation import EvaluationStateError

    def report(*_: object) -> None:
        raise EvaluationStateError("not an evaluation of format 1 (a pickle, never loaded)")

    async def answers(*_: object) -> list[str]:
        return []

    monkeypatch.setattr(streams.cli.compare, "report", report)
    monkeypatch.setattr(
        streams.runtime.reach, "missing_topics", answers
    )  # no servers in unit tests
    monkeypatch.setattr(streams.runtime.reach, "check_redis", lambda _: None)
    result = runner.invoke(app, ["compare", "--spec", str(SPEC)])
    assert result.exit_code == 1
    assert "stored rolling evaluation: not an evaluation of format 1" in result.output


def test_compare_prints_full_model_names_whatever_the_width(monkeypatch) -> None:
    from rich.table import Table

    import streams.cli.compare
    import streams.runtime.reach

    long_name = "fraud_gradient_boosting_with_a_very_long_descriptive_name_v2"
    table = Table(title="shadows vs primary")
    for column in ("shadow", "versions", "compared", "agreement", "changed", "|diff| p50"):
        table.add_column(column)
    table.add_row(long_name, "1,2,3", "5,923", "99.09%", "54", "0.0033")

    async def answers(*_: object) -> list[str]:
        return []

    monkeypatch.setattr(streams.cli.compare, "report", lambda *_: [table])
    monkeypatch.setattr(streams.runtime.reach, "missing_topics", answers)
    monkeypatch.setattr(streams.runtime.reach, "check_redis", lambda _: None)
    result = runner.invoke(app, ["compare", "--spec", str(SPEC)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert long_name in result.output
    assert "99.09%" in result.output


def test_compare_tables_never_cut_model_names_in_80_columns() -> None:
    """Two shadows sharing a long prefix once printed as the same ``phish_…``."""
    from rich.console import Console
    from rich.table import Table

    from streams.cli.compare import _add_column

    names = ["phishing_online_river_model_a", "phishing_online_river_model_b"]
    table = Table()
    for column in ("shadow", "versions", "compared", "agreement", "changed", "|diff| p50"):
        _add_column(table, column, names)
    for name in names:
        table.add_row(name, "1,2,3", "1,250", "88.00%", "150", "0.1234")
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(table)
    text = console.export_text()
    assert all(name in text for name in names)
