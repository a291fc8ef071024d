"""The docstring examples run and stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "streams.spec",
        "streams.validation",
        "streams.limits",
        "streams.privacy",
        "streams.replay",
        "streams.monitoring.rules",
        "streams.monitoring.spec",
        "streams.monitoring.drift",
        "models.profile",
        "features.store",
        "features.freshness",
        "streams.connections",
        "streams.apache_kafka.install",
        "streams.compare",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0, f"{module} has no examples to run"
    assert result.failed == 0
