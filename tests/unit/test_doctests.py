"""The docstring examples run and stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "streams.spec",
        "streams.scoring.validation",
        "streams.scoring.limits",
        "streams.scoring.privacy",
        "streams.cli.replay",
        "streams.monitoring.rules",
        "streams.monitoring.spec",
        "streams.monitoring.drift",
        "streams.monitoring.skew",
        "streams.monitoring.window",
        "streams.monitoring.quality",
        "models.profile",
        "features.store",
        "features.freshness",
        "streams.runtime.connections",
        "streams.runtime.apache_kafka.install",
        "streams.cli.compare",
        "streams.learning.labelled_frame",
        "streams.actions.spec",
        "streams.actions.compare",
        "streams.scoring.canary",
        "streams.scoring.records",
        "streams.actions.triggers",
        "streams.actions.controller",
        "streams.monitoring.estimate",
        "streams.learning.concept_drift",
        "streams.learning.realized",
        "streams.monitoring.slices",
        "streams.learning.slice_evaluation",
        "streams.scoring.prediction_store",
        "streams.cli.drift_switch",
        "streams.monitoring.reading",
        "streams.monitoring.health",
        "streams.monitoring.dashboard",
        "streams.monitoring.dashboard.panel",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0, f"{module} has no examples to run"
    assert result.failed == 0
