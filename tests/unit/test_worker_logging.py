"""A worker logs at its configured level: Faust's spinner must not lower the root to DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.runtime.app import create_app, create_worker
from streams.settings import Settings
from tests.unit.test_pipeline import SPEC


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("level", "expected"), [("warn", logging.WARNING), ("info", logging.INFO)])
def test_root_logger_gets_the_configured_level(
    level: str, expected: int, restore_root_logger: None, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        data_dir=tmp_path,
        log_level=level,  # type: ignore[arg-type]
    )
    worker = create_worker(create_app(SPEC, settings), settings)
    worker._setup_logging()  # what Worker.execute_from_commandline does first
    root = logging.getLogger()
    assert root.level == expected
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
