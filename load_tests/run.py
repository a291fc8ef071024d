"""``python -m load_tests.run`` (``make load``): the whole load test in one command.

Starts the embedded broker (Apache Kafka where Java is, else Tansu; the
``STREAMSCORE_EMBEDDED_BROKER`` setting chooses) and Redis, prepares the demo pipeline in a
temporary folder (Feast apply + materialize, training if needed), starts the generator
process, then measures, one system at a time on the same machine:

1. the pass-through ceiling (``load_tests.baselines passthrough``),
2. the naive per-event pipeline (``load_tests.baselines naive``),
3. the real pipeline (``streamscore worker``): latency at 2,000 events/s Poisson, bursts,
   the sustained throughput (with labels, then without), then with a second worker;
4. what monitoring costs: the real pipeline with the spec's monitoring on and off
   (``monitoring.enabled``), the same constant rate offered to each in turn, CPU per event
   of the scoring worker (``load_tests.monitoring_cost``; ``--only monitoring_cost`` alone);

then, on the same broker and Redis, the online model's served accuracy at 2,000 events/s
(``load_tests.online_accuracy``; not with ``--only``).

Writes report.json, report.md, throughput.png, latency.png and online_accuracy.{json,md}
into ``load_tests/reports/<time>-<preset>/`` and prints the comparison. Everything started is
stopped, on Ctrl-C and on failure too. ``--quick`` gives rough figures in about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from load_tests import environment, online_accuracy, profiling
from load_tests.config import PROFILES
from load_tests.markdown import print_comparison
from load_tests.session import SYSTEMS, run_load
from load_tests.traffic import Mix

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT / "streams" / "specs" / "card_fraud.yaml"
REPORTS = Path(__file__).resolve().parent / "reports"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="rough figures in about a minute")
    parser.add_argument("--preset", choices=sorted(PROFILES), help="full (default), quick, tiny")
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="pipeline spec")
    parser.add_argument("--out", type=Path, help="report folder (default: reports/<time>)")
    parser.add_argument(
        "--workdir", type=Path, help="prepare the pipeline here and keep it (default: temp)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also sample each worker with py-spy under load"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SYSTEMS,
        help="measure only this system (repeatable; real includes its two-worker search;"
        " monitoring_cost: the scoring worker's CPU per event with the spec's monitoring on"
        " and off, side by side at one fixed rate)",
    )
    parser.add_argument("--bad", type=float, help="share of invalid events (default 0.01)")
    parser.add_argument("--unknown", type=float, help="share of unknown entities (default 0.01)")
    parser.add_argument("--label-delay", type=float, help="seconds from event to label (2)")
    parser.add_argument("--label-fraction", type=float, help="share of events labelled (1.0)")
    parser.add_argument("--log-level", default="warn", help="workers' log level")
    parser.add_argument(
        "--online-passes",
        type=int,
        default=online_accuracy.Plan().passes,
        help="the online-accuracy benchmark's passes over Phishing at the end (0: skip; it is"
        " skipped with --only too)",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C and SIGTERM both unwind the run, which stops everything it started. (A shell
    # starts background jobs with SIGINT ignored; restore it so `kill -INT` works too.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    profile = PROFILES[args.preset or ("quick" if args.quick else "full")]
    profile = replace(
        profile,
        mix=Mix(
            bad=profile.mix.bad if args.bad is None else args.bad,
            unknown=profile.mix.unknown if args.unknown is None else args.unknown,
        ),
        label_delay=profile.label_delay if args.label_delay is None else args.label_delay,
        label_fraction=(
            profile.label_fraction if args.label_fraction is None else args.label_fraction
        ),
    )
    console = Console()
    if args.profile and not profiling.available():
        console.print("[red]--profile needs py-spy[/red] (pip install py-spy)")
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or REPORTS / f"{stamp}-{profile.name}"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="streamscore-load-"))
    console.print(f"streamscore load test ({profile.name}); report -> {out_dir}")
    online = None
    try:
        with environment.embedded(args.spec, workdir, args.log_level, console.print) as env:
            report = asyncio.run(
                run_load(
                    env,
                    profile,
                    out_dir,
                    console,
                    with_profiler=args.profile,
                    only=tuple(args.only or SYSTEMS),
                )
            )
            if args.only is None and args.online_passes > 0:
                online = online_part(env, args.online_passes, out_dir, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: every process this run started is stopped")
        return 130
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print_comparison(report, console)
    console.print(f"report: {out_dir / 'report.md'}")
    if online is not None:
        console.print(online_accuracy.headline(online))
        console.print(f"report: {out_dir / 'online_accuracy.md'}")
    return 0


def online_part(
    env: environment.Environment, passes: int, out_dir: Path, console: Console
) -> dict[str, Any] | None:
    """The online model's served accuracy at 2,000 events/s (load_tests/online_accuracy.py)
    on the same broker and Redis, once the systems are measured; its failure is reported and
    leaves the load report as it is."""
    console.print("online accuracy: the phishing pipeline at 2,000 events/s")
    plan = replace(online_accuracy.Plan(), passes=passes)
    try:
        return online_accuracy.run_after_load(env, plan, out_dir, console.print)
    except Exception as error:  # noqa: BLE001 - the load report stands without it
        console.print(f"[red]online accuracy failed[/red]: {error}")
        return None


if __name__ == "__main__":
    sys.exit(main())
