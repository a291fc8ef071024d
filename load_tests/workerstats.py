"""What the workers say about a phase: deltas of their /metrics between its start and end."""

from __future__ import annotations

from collections.abc import Sequence

from load_tests.processes import Samples, Worker, scrape, sum_of

STAGES = ("decode", "enrich", "infer", "drift", "quality", "publish")


def worker_samples(workers: Sequence[Worker]) -> list[Samples | None]:
    """Every worker's /metrics now (None for one that does not answer)."""
    return [scrape(worker.settings.metrics_port) for worker in workers]


def worker_delta(before: list[Samples | None], after: list[Samples | None]) -> dict[str, float]:
    """Per-stage mean batch time, mean batch size, events, CPU seconds and resident memory
    at the end, summed over the workers."""
    out: dict[str, float] = {}
    totals: dict[str, float] = {}
    rss = 0.0  # at the phase's end: a worker whose memory grows shows it here
    for b, a in zip(before, after, strict=False):
        if not a:
            continue
        rss += sum_of(a, "process_resident_memory_bytes")
        b = b or {}
        names = [("events", "streamscore_events_total", {})]
        names += [
            ("batch_size_sum", "streamscore_batch_size_events_sum", {}),
            ("batches", "streamscore_batch_size_events_count", {}),
        ]
        for stage in STAGES:
            names.append(
                (f"{stage}_sum", "streamscore_stage_duration_seconds_sum", {"stage": stage})
            )
            names.append(
                (f"{stage}_count", "streamscore_stage_duration_seconds_count", {"stage": stage})
            )
        names.append(("cpu_seconds", "process_cpu_seconds_total", {}))
        for key, name, labels in names:
            totals[key] = (
                totals.get(key, 0.0) + sum_of(a, name, **labels) - sum_of(b, name, **labels)
            )
    if not totals:
        return out
    out["events"] = totals["events"]
    out["cpu_seconds"] = totals["cpu_seconds"]
    out["rss_mb"] = rss / 2**20
    if totals["batches"]:
        out["mean_batch_size"] = totals["batch_size_sum"] / totals["batches"]
    for stage in STAGES:
        if totals[f"{stage}_count"]:
            out[f"{stage}_ms_per_batch"] = (
                1000.0 * totals[f"{stage}_sum"] / totals[f"{stage}_count"]
            )
            if totals["events"]:
                out[f"{stage}_us_per_event"] = 1e6 * totals[f"{stage}_sum"] / totals["events"]
    return out
