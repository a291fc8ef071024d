"""PNG plots of ``streamscore health --out``: each column's PSI over the windows read, and
the score's, per model, with the warn and alert thresholds drawn.

matplotlib is in the ``health`` extra (``pip install 'streamscore[health]'``; ``make``
installs it); without it, ``--out`` fails in one line saying so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from streams.cli.health import HealthError
from streams.monitoring.health import HealthReport, ModelDrift


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        msg = (
            "health --out: the plots need matplotlib, which is not installed: pip install"
            " 'streamscore[health]' (or leave out --out for the terminal report)"
        )
        raise HealthError(msg) from exc
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _thresholds(axes: Any, drift: ModelDrift) -> None:
    # Black, dotted and dashed: never the colour of a column's line.
    for name, style in (("warn", ":"), ("alert", "--")):
        value = drift.thresholds.get(name)
        if isinstance(value, (int, float)):
            axes.axhline(
                value, color="black", linestyle=style, linewidth=1, label=f"{name} {value:g}"
            )
    axes.xaxis.get_major_locator().set_params(integer=True)


def plot_drift(report: HealthReport, out: Path) -> list[Path]:
    """``drift_columns_<model>.png`` and ``score_psi_<model>.png`` per model with windows."""
    plt = _pyplot()
    written = []
    for drift in report.models.values():
        if not drift.windows:
            continue
        x = list(range(1, len(drift.windows) + 1))
        figure, axes = plt.subplots(figsize=(10, 5))
        for column, series in sorted(drift.psi.items()):
            values = [float("nan") if v is None else v for v in series]
            axes.plot(x, values, marker="." if len(x) <= 30 else None, label=column)
        _thresholds(axes, drift)
        axes.set(
            title=f"{drift.model}: PSI per input column",
            xlabel="window (oldest first)",
            ylabel="PSI",
        )
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        figure.tight_layout()
        name = re.sub(r"[^A-Za-z0-9._-]", "_", drift.model)  # a file name, whatever the model's
        path = out / f"drift_columns_{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)

        figure, axes = plt.subplots(figsize=(10, 4))
        score = [float("nan") if v is None else v for v in drift.score]
        axes.plot(x, score, marker="." if len(x) <= 30 else None, label="score")
        _thresholds(axes, drift)
        axes.set(
            title=f"{drift.model}: PSI of the score", xlabel="window (oldest first)", ylabel="PSI"
        )
        axes.legend(fontsize="small")
        figure.tight_layout()
        path = out / f"score_psi_{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
