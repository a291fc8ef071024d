"""CPU and memory of every process of a run, so a figure can be read against who used the
machine: on 2 cores the broker, Redis, the generator and this run share it with the workers.
"""

from __future__ import annotations

import contextlib
import os
import time

import psutil


class CpuMeter:
    """Named processes; ``percent_since`` gives each one's CPU share (100 = one core)."""

    def __init__(self) -> None:
        self._processes: dict[str, psutil.Process] = {}
        self.track("run (meter, display)", os.getpid())

    def track(self, name: str, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self._processes[name] = psutil.Process(pid)

    def forget(self, name: str) -> None:
        self._processes.pop(name, None)

    def snapshot(self) -> dict[str, float]:
        cpu = psutil.cpu_times()
        busy = (
            cpu.user + cpu.system + cpu.nice + getattr(cpu, "irq", 0) + getattr(cpu, "softirq", 0)
        )
        out = {"__wall__": time.monotonic(), "__busy__": busy}
        for name, process in list(self._processes.items()):
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            out[name] = times.user + times.system
        return out

    def percent_since(self, before: dict[str, float]) -> dict[str, float]:
        after = self.snapshot()
        wall = max(after["__wall__"] - before["__wall__"], 1e-3)
        shares = {
            name: round(100.0 * (after[name] - before[name]) / wall, 1)
            for name in after
            if name in before and not name.startswith("__")
        }
        busy = round(100.0 * (after["__busy__"] - before["__busy__"]) / wall, 1)
        shares["other processes"] = round(max(busy - sum(shares.values()), 0.0), 1)
        shares["machine busy"] = busy
        shares["machine capacity"] = 100.0 * (psutil.cpu_count() or 1)
        return shares

    def memory_mb(self) -> dict[str, float]:
        out = {}
        for name, process in self._processes.items():
            try:
                out[name] = round(process.memory_info().rss / 2**20, 1)
            except psutil.Error:
                continue
        return out
