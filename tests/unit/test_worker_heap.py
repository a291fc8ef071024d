"""A worker freezes its start-up heap before it runs, so full collections skip it."""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest

from streams.runtime import worker as worker_module
from streams.settings import Settings
from tests.unit.test_pipeline import SPEC


class _NotRunning:
    def __init__(self) -> None:
        self.frozen_when_run: int | None = None

    def execute_from_commandline(self) -> None:
        self.frozen_when_run = gc.get_freeze_count()


def test_the_startup_heap_is_frozen_before_the_worker_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = _NotRunning()

    def build(*_: Any) -> _NotRunning:
        built.frozen_when_run = None
        assert gc.get_freeze_count() == 0  # nothing frozen while the worker is being built
        return built

    async def no_broker(*_: Any) -> dict[str, int]:
        return {}

    monkeypatch.setattr(worker_module, "build_worker", build)
    monkeypatch.setattr(worker_module, "declare_topics_in_time", no_broker)
    monkeypatch.setattr(worker_module, "check_kafka", no_broker)
    monkeypatch.setattr(worker_module, "check_redis", lambda _: None)
    interval = sys.getswitchinterval()
    gc.unfreeze()
    try:
        worker_module.run_worker(SPEC, Settings(metrics_port=0))
    finally:
        gc.unfreeze()
        sys.setswitchinterval(interval)
    assert built.frozen_when_run is not None and built.frozen_when_run > 1000
