"""Child processes of a load run: baseline workers and the generator, plus /metrics reads.

Real workers are ``streams.runtime.processes.WorkerProcess`` (``streamscore worker``). Baselines and
the generator are started the same way: their own session (a Ctrl-C reaches only the run,
which stops them in order), a parent-death signal (a crashed run leaves nothing behind), and
SIGTERM then SIGKILL on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
from prometheus_client.parser import text_string_to_metric_families

from streams.runtime.embedded import die_with_parent
from streams.runtime.processes import WorkerProcess
from streams.settings import Settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Worker(Protocol):
    """What the run needs of a system's worker process, real or baseline."""

    settings: Settings
    process: subprocess.Popen[bytes]

    @property
    def running(self) -> bool: ...

    def assigned_partitions(self) -> float | None: ...

    def stop(self, timeout: float = 20.0) -> int: ...

    def log_tail(self, lines: int = 30) -> str: ...


def baseline_process(mode: str, spec_path: Path, settings: Settings, log_path: Path) -> Worker:
    """``python -m load_tests.baselines MODE --spec SPEC``, run and stopped like a worker."""
    command = [sys.executable, "-m", "load_tests.baselines", mode, "--spec", str(spec_path)]
    return WorkerProcess(spec_path, settings, log_path, command=command)


def scrape(port: int) -> Samples | None:
    """Every sample on a worker's /metrics, keyed by (name, sorted labels); None if down."""
    if not port:
        return None
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback
            text = response.read().decode()
    except OSError:
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sum_of(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


class GeneratorProcess:
    """``python -m load_tests.generator``: commands in on stdin, reports out on stdout."""

    def __init__(self, process: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.process = process
        self._log = log
        self.kinds = ""
        self.reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.progress: dict[int, dict[str, Any]] = {}  # phase -> latest progress report
        self.done: dict[int, dict[str, Any]] = {}
        self.bye: dict[str, Any] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        bootstrap: str,
        spec_path: Path,
        log_path: Path,
        *,
        seed: int,
        pool_size: int,
        bad: float,
        unknown: float,
        ready_timeout: float = 120.0,
    ) -> GeneratorProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            "load_tests.generator",
            "--bootstrap",
            bootstrap,
            "--spec",
            str(spec_path),
            "--seed",
            str(seed),
            "--pool-size",
            str(pool_size),
            "--bad",
            str(bad),
            "--unknown",
            str(unknown),
        ]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        generator = cls(process, log)
        generator._reader = asyncio.create_task(generator._read(), name="generator-reader")
        try:
            ready = await asyncio.wait_for(generator.reports.get(), ready_timeout)
        except TimeoutError:
            await generator.stop()
            raise RuntimeError(f"the generator did not start in {ready_timeout}s") from None
        if ready.get("type") != "ready":
            await generator.stop()
            raise RuntimeError(f"the generator failed to start: {ready}; see {log_path}")
        generator.kinds = ready["kinds"]
        return generator

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            report = orjson.loads(line)
            kind = report.get("type")
            if kind == "progress":
                self.progress[report["phase"]] = report
            elif kind == "done":
                self.done[report["phase"]] = report
            elif kind == "bye":
                self.bye = report
            await self.reports.put(report)
        await self.reports.put({"type": "exited"})

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def send(self, **command: Any) -> None:
        if self.process.stdin is None or not self.running:
            raise RuntimeError("the generator is not running")
        self.process.stdin.write(orjson.dumps(command) + b"\n")
        await self.process.stdin.drain()

    async def stop(self, timeout: float = 10.0) -> int | None:
        if self.running:
            with contextlib.suppress(Exception):
                await self.send(cmd="quit")
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._log.close()
        return self.process.returncode
