"""A worker logs at its configured level: Faust's spinner must not lower the root to DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from streams.app import create_worker
from streams.settings import Settings


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("level", "expected"), [("warn", logging.WARNING), ("info", logging.INFO)])
def test_root_logger_gets_the_configured_level(
    level: str, expected: int, restore_root_logger: None
) -> None:
    import faust

    app = faust.App("logging-test", broker="kafka://127.0.0.1:1")
    worker = create_worker(app, Settings(log_level=level))  # type: ignore[arg-type]
    worker._setup_logging()  # what Worker.execute_from_commandline does first
    root = logging.getLogger()
    assert root.level == expected
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
