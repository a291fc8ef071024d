"""One retrain from the stream, run by the controller in a child process.

The child is ``streamscore train --spec S --from-stream [--since T]``: the same code a person
runs (``streams.cli.train_stream``: ``read_labelled`` then ``train_challenger``). A child
rather than a thread because fitting holds the GIL for as long as it takes (the controller's
loop must keep ticking, and answer SIGTERM at once) and because a child can be stopped: a
thread cannot. Its output goes to a temporary file (a pipe left unread could fill and block
it); its last line is the failure's reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.registry import CHALLENGER, ModelRegistry
from streams.runtime.embedded import die_with_parent
from streams.runtime.processes import settings_env
from streams.scoring.records import iso_utc
from streams.settings import Settings
from streams.spec import PipelineSpec

#: How long a stopped child gets to exit on SIGTERM before it is killed.
STOP_SECONDS = 5.0


@dataclass(frozen=True)
class RetrainOutcome:
    ok: bool
    version: int | None  # the new challenger
    lineage: dict[str, Any] | None  # its summary, for the retrain_finished record
    reason: str  # why it failed ('' when ok)
    seconds: float


class RetrainJob:
    """A running ``train --from-stream`` child; ``poll`` until it gives an outcome."""

    def __init__(
        self,
        spec: PipelineSpec,
        spec_path: Path,
        settings: Settings,
        *,
        since: float | None,
        timeout: float,
        clock: Any = time.monotonic,
    ) -> None:
        self._spec = spec
        self._registry = ModelRegistry(settings.model_dir)
        self._before = set(self._registry.versions(spec.model.name))
        self._timeout = timeout
        self._clock = clock
        self.started = clock()
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (closed when the job ends)
        command = [
            sys.executable, "-m", "streams.cli", "train", "--spec", str(spec_path),
            "--from-stream",
        ]  # fmt: skip
        if since is not None:
            command += ["--since", iso_utc(since)]
        self.process = subprocess.Popen(  # noqa: S603 (our own command, no shell)
            command,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **settings_env(settings), "COLUMNS": "400"},
            start_new_session=True,  # a Ctrl-C reaches the controller, which stops us
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )

    def poll(self) -> RetrainOutcome | None:
        """The outcome once the child has exited (or was stopped past the timeout)."""
        elapsed = self._clock() - self.started
        code = self.process.poll()
        if code is None:
            if elapsed <= self._timeout:
                return None
            self.stop()
            return self._failed(
                f"stopped after {elapsed:.0f} s (STREAMSCORE_CONTROLLER_RETRAIN_TIMEOUT_SECONDS)",
                elapsed,
            )
        if code != 0:
            return self._failed(f"exit status {code}: {self._last_line()}", elapsed)
        found = self._registry.aliases(self._spec.model.name).get(CHALLENGER)
        self._output.close()
        if found is None or found in self._before:
            reason = f"exit status 0, yet no new version has the alias {CHALLENGER!r} ({found})"
            return RetrainOutcome(False, None, None, reason, elapsed)
        version = self._registry.version(self._spec.model.name, found)
        return RetrainOutcome(True, found, lineage_summary(version.manifest), "", elapsed)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_SECONDS``: bounded."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_SECONDS)

    def _failed(self, reason: str, elapsed: float) -> RetrainOutcome:
        self._output.close()
        return RetrainOutcome(False, None, None, f"train --from-stream: {reason}", elapsed)

    def _last_line(self) -> str:
        self._output.seek(0)
        lines = [line.strip() for line in self._output.read().decode(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        return lines[-1][:500] if lines else "no output"


def lineage_summary(manifest: Any) -> dict[str, Any] | None:
    """What a ``retrain_finished`` record says of the new version's data."""
    lineage = manifest.lineage
    if lineage is None:
        return None
    return {
        "topic": lineage.topic,
        "offsets": {str(p): list(span) for p, span in sorted(lineage.offsets.items())},
        "rows": lineage.rows,
        "sha256": lineage.sha256,
        "since": lineage.since,
        "holdout_rows": lineage.holdout_rows,
        "metrics": dict(lineage.metrics),
    }
