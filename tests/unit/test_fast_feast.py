"""A serving worker imports Feast without typeguard's per-class instrumentation; every other
command keeps Feast's type checks on the user's definitions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# True when Feast's FeatureView.__init__ was rewritten by typeguard (it calls its checks).
PROBE = """
import sys
from features.fast_feast import skip_feast_type_checks
if sys.argv[1] == "skip":
    assert skip_feast_type_checks()
import feast.feature_view
names = feast.feature_view.FeatureView.__init__.__code__.co_names
print("check_argument_types_internal" in names)
assert not skip_feast_type_checks(), "too late once Feast is imported"
"""


def instrumented(mode: str) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip() == "True"


def test_feast_is_instrumented_unless_skipped() -> None:
    assert instrumented("keep")
    assert not instrumented("skip")


WORKER = """
import socket, sys
from typer.testing import CliRunner
from streams.cli.main import app

runner = CliRunner()
bad = runner.invoke(app, ["worker", "--spec", "no-such-spec.yaml"])
assert bad.exit_code == 2, bad.output
print("feast" in sys.modules)  # a bad spec fails before the heavy imports
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]  # nothing listens there
env = {"STREAMSCORE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
       "STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
down = runner.invoke(app, ["worker", "--spec", "streams/specs/card_fraud.yaml"], env=env)
assert down.exit_code != 0, down.output
import feast.feature_view
print("check_argument_types_internal" in feast.feature_view.FeatureView.__init__.__code__.co_names)
"""


def test_the_worker_command_reads_its_spec_first_then_imports_feast_unchecked() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
