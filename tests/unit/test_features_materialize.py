"""``streamscore features materialize``: once (a failure exits 1) or on a loop that outlives
failed runs (the compose service ``features-materialize`` runs it with ``--every``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import features.store
import streams.cli.main
from features.errors import FeatureStoreError
from streams.cli.main import app

SPEC = str(Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml")


class _Stop(Exception):
    """Ends the --every loop from the test's fake sleep."""


class FakeStore:
    """Stands in for open_store + materialize: runs as ``script`` says ("ok" once empty)."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.runs: list[str] = []

    def materialize(self, store: Any) -> None:
        outcome = self.script.pop(0) if self.script else "ok"
        self.runs.append(outcome)
        if outcome == "fail":
            msg = "feature store: materializing project 'card_fraud': Redis refused"
            raise FeatureStoreError(msg)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    monkeypatch.setattr(features.store, "open_store", lambda repo, redis: object())
    monkeypatch.setattr(features.store, "materialize", fake.materialize)
    return fake


def test_once_succeeds(store: FakeStore) -> None:
    result = CliRunner().invoke(app, ["features", "materialize", "--spec", SPEC])
    assert result.exit_code == 0, result.output
    assert store.runs == ["ok"]


def test_once_fails_in_one_line_with_exit_1(store: FakeStore) -> None:
    store.script.append("fail")
    result = CliRunner().invoke(app, ["features", "materialize", "--spec", SPEC])
    assert result.exit_code == 1
    assert "Redis refused" in result.output
    assert store.runs == ["fail"]


def test_every_keeps_going_after_a_failed_run(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.script.append("fail")
    slept: list[float] = []

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise _Stop

    monkeypatch.setattr(streams.cli.main.time, "sleep", fake_sleep)
    result = CliRunner().invoke(app, ["features", "materialize", "--spec", SPEC, "--every", "300"])
    assert isinstance(result.exception, _Stop), result.output
    assert store.runs == ["fail", "ok", "ok"]
    assert slept == [300, 300, 300]
    assert "Redis refused" in result.output
