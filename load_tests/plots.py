"""PNG plots of a load run: throughput over time per system, latency percentiles."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from load_tests.steps import StepResult, System  # noqa: E402

COLORS = {
    "passthrough": "tab:green",
    "naive": "tab:red",
    "real": "tab:blue",
    "real_x2": "tab:purple",
    "real_no_labels": "tab:brown",
    "real_monitoring_on": "tab:cyan",
    "real_monitoring_off": "tab:gray",
}


def _rates(times: np.ndarray[Any, Any], counts: np.ndarray[Any, Any], window: float = 1.0) -> Any:
    """Events/s over the trailing ``window`` seconds at each sample."""
    earlier = np.interp(times - window, times, counts, left=counts[0])
    spans = np.minimum(times - times[0], window)
    spans[spans <= 0] = np.nan
    return (counts - earlier) / spans


def plot_throughput(systems: list[System], path: Path) -> None:
    # One segment per started system: a system restarted on an empty broker (same name)
    # counts from zero again, so its segments are drawn apart, never joined.
    groups: dict[str, list[list[tuple[float, int, int]]]] = defaultdict(list)
    steps: dict[str, list[StepResult]] = defaultdict(list)
    for system in systems:
        segments: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
        for t, offered, outputs, name in system.series:
            segments[name].append((t, offered, outputs))
        for name, segment in segments.items():
            groups[name].append(segment)
        for step in system.steps:
            steps[step.system].append(step)
    names = list(groups) or ["(no data)"]
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 3.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        parts = [np.array(seg, dtype=np.float64) for seg in groups.get(name, []) if seg]
        if not parts:
            continue
        t0 = min(part[0, 0] for part in parts)
        backlog_ax = ax.twinx()
        for i, data in enumerate(parts):
            t = data[:, 0] - t0
            first = i == 0
            ax.plot(
                t, _rates(data[:, 0], data[:, 1]), color="0.5", lw=1,
                label="offered/s" if first else None,
            )  # fmt: skip
            ax.plot(
                t, _rates(data[:, 0], data[:, 2]), color=COLORS.get(name, "k"), lw=1.5,
                label="output/s" if first else None,
            )  # fmt: skip
            backlog_ax.fill_between(t, data[:, 1] - data[:, 2], color="tab:orange", alpha=0.15)
        ax.set_ylabel("events/s")
        backlog_ax.set_ylabel("backlog (events)", color="tab:orange")
        for step in steps.get(name, []):
            color = {True: "tab:green", False: "tab:red", None: "0.8"}[step.bounded]
            ax.axvspan(step.start - t0, step.end - t0, color=color, alpha=0.06)
            ax.annotate(
                step.label,
                (step.start - t0, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                va="top",
                rotation=90,
            )
        ax.set_title(f"{name}: offered vs output rate (green: sustained step, red: not)")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the system's first phase")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(systems: list[System], extras: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    real = next((s for s in systems if s.mode == "real"), None)
    for key, style in (("latency", "-"), ("bursts", ":")):
        step: StepResult | None = extras.get(key)
        if step is None or real is None:
            continue
        published, latency = real.meter.tally(step.phase).latencies()
        if published.size == 0:
            continue
        second = np.floor(published - published.min())
        for q, color in ((50, "tab:blue"), (99, "tab:red")):
            xs = np.unique(second)
            ys = [np.percentile(latency[second == x], q) * 1000.0 for x in xs]
            left.plot(xs, ys, style, color=color, label=f"{key} p{q}")
    if left.has_data():  # a run without the latency phases (--only) plots nothing there
        left.set_yscale("log")
    left.set_xlabel("second of the phase")
    left.set_ylabel("latency, event time -> publish (ms)")
    left.set_title("real pipeline: per-second latency percentiles")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)

    for system in systems:
        for step in system.steps:
            if step.bounded is None or "p50" not in step.latency_ms:
                continue
            color = COLORS.get(step.system, "k")
            face = color if step.bounded else "none"
            right.scatter(
                step.pattern.rate, step.latency_ms["p50"], marker="o", color=color, facecolors=face
            )
            right.scatter(
                step.pattern.rate, step.latency_ms["p99"], marker="^", color=color, facecolors=face
            )
    for name, color in COLORS.items():
        right.scatter([], [], color=color, label=name)
    right.scatter([], [], marker="o", color="k", label="p50")
    right.scatter([], [], marker="^", color="k", label="p99 (hollow: not sustained)")
    if right.collections and any(len(c.get_offsets()) for c in right.collections):
        right.set_xscale("log")
        right.set_yscale("log")
    right.set_xlabel("offered events/s (search steps)")
    right.set_ylabel("latency (ms)")
    right.set_title("latency by offered rate")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
