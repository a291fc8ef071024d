"""Where a worker's CPU goes under load: py-spy samples, summarized.

With ``--profile`` the run offers each system 90% of its sustained rate for a few seconds
after its search, while ``py-spy record`` samples its worker process (all threads, active samples
only), then sums the stacks: the share of samples spent in each stage (exclusive),
by thread, and the functions that were on top of the stack most often (self time).
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from load_tests.traffic import Pattern
from streams.runtime.embedded import die_with_parent

if TYPE_CHECKING:
    from load_tests.steps import Runner, System

# Each active sample is attributed to one stage: the leaf-most frame that belongs to a
# project stage (so aiokafka code called by the publisher counts as publish), else the
# leaf-most library group. Shares add up to 100%.
PROJECT_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode (EventValidator)", ("streams/scoring/validation.py",)),
    ("enrich (feature reader: Feast + Redis)", ("features/reader.py",)),
    ("infer (model input + ONNX)", ("models/inputs.py", "models/scorer.py")),
    (
        "encode prediction records",
        ("streams/scoring/records.py", "_predictions (streams/scoring/pipeline.py"),
    ),
    ("shadow models", ("streams/shadows/shadow.py",)),
    (
        "monitoring: drift + estimate",
        ("streams/monitoring/drift.py", "streams/monitoring/estimate.py", "models/profile.py"),
    ),
    (
        "monitoring: data quality + slices",
        (
            "streams/monitoring/quality.py",
            "streams/monitoring/window.py",
            "streams/monitoring/slices.py",
        ),
    ),
    (
        "labels + prediction store",
        ("streams/learning/join.py", "streams/scoring/prediction_store.py"),
    ),
    ("online learner", ("streams/learning/learner.py", "models/online.py")),
    ("publish (KafkaPublisher)", ("streams/scoring/publish.py",)),
    ("metrics", ("streams/metrics.py",)),
    ("pipeline/service other", ("streams/scoring/pipeline.py", "streams/scoring/service.py")),
    ("agent (streams/runtime/app.py)", ("streams/runtime/app.py",)),
)
LIBRARY_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metrics", ("prometheus_client/",)),
    ("aiokafka producer (Faust's own sends)", ("aiokafka/producer",)),
    ("aiokafka consumer + client", ("aiokafka/",)),
    ("Faust/mode machinery", ("faust/", "mode/")),
    ("Redis client", ("redis/",)),
    ("asyncio internals", ("asyncio/",)),
    ("threads/executor plumbing", ("concurrent/futures/", "threading.py")),
)
SAMPLE_RATE = 200
THREADS = (
    ("scoring thread (executor)", "concurrent/futures/thread.py"),
    ("Faust consumer thread", "mode/threads.py"),
)
# Leaf frames of a thread that waits (py-spy's idle detection misses them here).
IDLE_LEAVES = (
    "select (selectors.py",
    "_worker (concurrent/futures/thread.py",
    "wait (threading.py",
    "Condition.wait",
    "Event.wait (threading.py",
)
# Which task a sample belongs to: the first marker found anywhere in its stack.
TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scoring thread: score_batch", ("ScoringPipeline.score_batch",)),
    ("model runs in the executor (primary or shadow)", ("OnnxScorer.score",)),
    ("scoring agent (event loop side)", ("attach_scoring_agent", "ScoringService")),
    ("labels consumer: join", ("LabelJoiner",)),
    ("labels consumer: learner", ("LearnerService",)),
    ("labels consumer: fetch, dead letters, commit", ("LabelConsumer",)),
    ("shadow runners", ("ShadowRunner", "OnlineSnapshotModel")),
    ("baseline agent", ("attach_passthrough", "attach_naive")),
    (
        "Faust: deliver fetched records to streams",
        ("Fetcher._fetcher", "_drain_messages", "on_message", "_passive_drainer"),
    ),
    ("aiokafka producer: send requests", ("Sender._send", "Sender._sender_routine")),
    ("Faust consumer thread: fetch requests", ("WorkerThread.run",)),
    ("Faust commits/offsets", ("commit",)),
)


def _stage(frames: list[str]) -> str:
    for group in (PROJECT_STAGES, LIBRARY_STAGES):
        for frame in reversed(frames):
            for stage, needles in group:
                if any(needle in frame for needle in needles):
                    return stage
    return "other"


def _task(stack: str) -> str:
    for task, needles in TASKS:
        if any(needle in stack for needle in needles):
            return task
    return "event loop: other callbacks" if "_run_once" in stack else "other"


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def available() -> bool:
    return py_spy() is not None


def rate_for(search: dict[str, Any]) -> float:
    """The rate a worker is sampled at after its search: 90% of what it sustained."""
    return max(0.9 * float(search.get("sustained_events_per_second") or 0.0), 500.0)


async def profile_worker(
    runner: Runner, system: System, rate: float, out_dir: Path, seconds: float
) -> dict[str, Any] | None:
    """Sample ``system``'s first worker with py-spy for ``seconds`` while it is offered
    ``rate`` events/s; the summary, or None without py-spy."""
    binary = py_spy()
    if binary is None:
        return None
    raw = out_dir / f"profile-{system.name}-worker.txt"
    out_dir.mkdir(parents=True, exist_ok=True)
    pid = system.workers[0].process.pid
    recorder = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(raw),
        "--nonblocking",
        "--gil",  # only samples holding the GIL: the worker's Python CPU, not its waits
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        step = await runner.phase(
            system, "profile", Pattern("constant", rate), seconds + 1.0, judge=False
        )
        _, err = await asyncio.wait_for(recorder.communicate(), seconds + 30.0)
    finally:
        if recorder.returncode is None:
            recorder.kill()
            await recorder.wait()
    await runner.drain(system, runner.profile.drain_seconds)
    if not raw.exists():
        return {"error": (err or b"").decode(errors="replace")[-500:]}
    summary = summarize(raw)
    summary.update(rate=rate, phase=step.phase, file=raw.name, worker=step.worker)
    return summary


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Busy samples by task, by stage and by thread, and the top self frames; samples whose
    leaf frame is a wait are counted as idle and left out of the shares."""
    stages: collections.Counter[str] = collections.Counter()
    tasks: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(marker in frames[-1] for marker in IDLE_LEAVES):
            idle += count
            continue
        busy += count
        leaves[frames[-1]] += count
        stages[_stage(frames)] += count
        tasks[_task(stack)] += count
        thread = next((name for name, needle in THREADS if needle in stack), "event loop thread")
        threads[thread] += count

    def share(n: int) -> float:
        return round(100.0 * n / busy, 1) if busy else 0.0

    return {
        "busy_samples": busy,
        "idle_samples": idle,
        "sample_rate_hz": SAMPLE_RATE,
        "attribution": "busy samples; a stage is the leaf-most project frame, else library",
        "tasks_percent": {task: share(n) for task, n in tasks.most_common()},
        "stages_percent": {stage: share(n) for stage, n in stages.most_common()},
        "threads_percent": {name: share(n) for name, n in threads.most_common()},
        "top_self_percent": [[frame, share(n)] for frame, n in leaves.most_common(top)],
    }
