"""Starting and stopping ``streamscore worker`` child processes (demo, tests, load tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from streams.runtime.embedded import die_with_parent
from streams.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings as the ``STREAMSCORE_*`` variables a child process reads them from
    (secrets included: the child needs them; its environment is readable by its user only)."""
    prefix = "STREAMSCORE_"
    return {
        f"{prefix}{name.upper()}": (
            value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        )
        for name, value in settings.model_dump().items()
        if value is not None
    }


class WorkerProcess:
    """A worker in its own process; its output goes to ``log_path``.

    ``command`` replaces ``streamscore worker --spec SPEC`` (the load tests' baselines).
    """

    def __init__(
        self,
        spec_path: Path,
        settings: Settings,
        log_path: Path,
        command: Sequence[str] | None = None,
    ) -> None:
        self.spec_path = spec_path
        self.settings = settings
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("wb")
        # The child inherits this environment (PATH, HOME, ...) with the settings on top.
        env = {**os.environ, **settings_env(settings)}
        default = [sys.executable, "-m", "streams.cli", "worker", "--spec", str(spec_path)]
        self.process = subprocess.Popen(
            list(command or default),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C goes to the parent, which stops us in order
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def assigned_partitions(self) -> float | None:
        """Input partitions the worker owns, from its /metrics (None before it serves them)."""
        return self.metric("streamscore_assigned_partitions")

    def metric(self, name: str, **labels: str) -> float | None:
        """Sum of a metric's samples matching ``labels`` on the worker's /metrics (None if
        the endpoint is not up yet, metrics are off, or nothing matches)."""
        port = self.settings.metrics_port
        if not port:
            return None
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback
                text = response.read().decode()
        except OSError:
            return None
        for family in text_string_to_metric_families(text):
            samples = [
                s
                for s in family.samples
                if s.name in (name, f"{name}_total")
                and all(s.labels.get(k) == v for k, v in labels.items())
            ]
            if family.name == name.removesuffix("_total") and samples:
                return sum(sample.value for sample in samples)
        return None

    def probe(self, path: str) -> tuple[int, dict[str, Any]] | None:
        """``(HTTP status, JSON body)`` of ``/ready`` or ``/live`` on the worker's metrics
        port (None if it does not answer, or metrics are off)."""
        port = self.settings.metrics_port
        if not port:
            return None
        url = f"http://127.0.0.1:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as error:  # 503: not ready / stuck, with its reasons
            with error:
                return error.code, orjson.loads(error.read())
        except OSError:
            return None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (Faust shuts down gracefully and commits), then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
