"""``python -m load_tests.faults`` (``make faults``): the fault suite, a few minutes.

Against the embedded servers (Apache Kafka where Java allows, else Tansu; persistent Redis),
one scenario at a time, each on a system of its own (a scoring worker and a learning worker,
restarted by a supervisor whenever they exit): kill -9 of the scoring worker and of the
learning worker under load, a Redis outage shorter and one longer than the feature-store
retry budget, a broker restart, then fuzzed events and malformed labels. Prints a table:
inputs, predicted, dead-lettered, lost (must be 0), duplicated, recovery time; writes
faults.json and faults.md. Exits 1 if any input was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
from rich.console import Console

from load_tests import environment
from load_tests.config import FULL
from load_tests.faults.fuzz import run_fuzz
from load_tests.faults.report import markdown, table
from load_tests.faults.scenarios import SCENARIOS, Outcome, redis_outage, run_scenario
from load_tests.processes import GeneratorProcess
from load_tests.session import start_system, stop_system
from load_tests.usage import CpuMeter
from streams.runtime.connections import KafkaConnection

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = REPO_ROOT / "streams" / "specs" / "card_fraud.yaml"
REPORTS = REPO_ROOT / "load_tests" / "reports"
#: Short budgets, so an outage past them fits a run of minutes (production: 60 s).
RETRY_BUDGET_SECONDS = 8.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m load_tests.faults", description=__doc__)
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--rate", type=float, default=500.0, help="events/s during a fault")
    parser.add_argument("--seconds", type=float, default=24.0, help="traffic per scenario")
    parser.add_argument("--fuzz-events", type=int, default=10_000)
    parser.add_argument("--fuzz-labels", type=int, default=2_000)
    parser.add_argument("--only", action="append", help="run only scenarios containing this")
    parser.add_argument("--out", type=Path, help="report folder (default: reports/<time>-faults)")
    return parser.parse_args(argv)


async def run(
    args: argparse.Namespace, console: Console, workdir: Path, out: Path
) -> list[Outcome]:
    profile = replace(FULL, label_delay=1.0)
    say = console.print
    outcomes: list[Outcome] = []
    with environment.embedded(args.spec, workdir, "warn", say, persistent_redis=True) as env:
        env.settings = env.settings.model_copy(
            update={
                "feature_store_retry_seconds": RETRY_BUDGET_SECONDS,
                "batch_timeout_seconds": RETRY_BUDGET_SECONDS * 3,
            }
        )
        scenarios = dict(SCENARIOS)
        scenarios["Redis outage past the budget"] = redis_outage(RETRY_BUDGET_SECONDS + 7)
        chosen = {
            name: inject for name, inject in scenarios.items()
            if not args.only or any(part in name for part in args.only)
        }  # fmt: skip
        cpu, logs = CpuMeter(), out / "logs"
        generator = await GeneratorProcess.start(
            env.settings.kafka_bootstrap_servers, args.spec, logs / "generator.log",
            seed=3, pool_size=4096, bad=profile.mix.bad, unknown=profile.mix.unknown,
        )  # fmt: skip
        try:
            for phase, (name, inject) in enumerate(chosen.items(), start=1):
                say(f"[bold]{name}[/bold]: {args.rate:g} events/s for {args.seconds:g} s")
                outcome = await run_scenario(
                    name, inject, env, generator, profile, cpu, logs,
                    rate=args.rate, seconds=args.seconds, phase=phase,
                )  # fmt: skip
                outcomes.append(outcome)
                console.print(table([outcome]))
            if not args.only or any("fuzz" in part for part in args.only):
                say(f"[bold]fuzz[/bold]: {args.fuzz_events:,} events, {args.fuzz_labels:,} labels")
                system = await start_system(
                    env, "fuzz", "real", "fuzz", generator.kinds, logs, cpu, profile
                )
                try:
                    fuzzed = await run_fuzz(
                        system, KafkaConnection.from_settings(env.settings),
                        args.fuzz_events, args.fuzz_labels, phase=100,
                    )  # fmt: skip
                finally:
                    await stop_system(system, cpu)
                outcomes += fuzzed
                console.print(table(fuzzed))
        finally:
            await generator.stop()
    return outcomes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The faults are deliberate: this process's own clients (the meter) would log every
    # refused connection while the broker is down.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    console = Console(width=None if sys.stdout.isatty() else 200)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or REPORTS / f"{stamp}-faults"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamscore-faults-") as workdir:
        outcomes = asyncio.run(run(args, console, Path(workdir), out))
    console.print(table(outcomes, title="fault suite"))
    (out / "faults.json").write_bytes(
        orjson.dumps([o.as_dict() for o in outcomes], option=orjson.OPT_INDENT_2)
    )
    (out / "faults.md").write_text(markdown(outcomes))
    console.print(f"report: {out / 'faults.md'}")
    lost = sum(o.lost for o in outcomes)
    if lost:
        console.print(f"[red]{lost} inputs lost[/red]")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
