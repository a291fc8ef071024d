"""``streamscore demo --cycle``: the demo with one full action cycle (drift, retrain from
the stream, a challenger shadowed, an automatic decision), each step on the actions topic.

The demo spec is written again, next to the demo's other files, with triggers a short demo
reaches (``cycle_spec_text``); the live summary shows the latest actions
(``action_text``).

>>> action_text({"action": "retrain_started", "to_version": None, "reasons": ["drift"]})
'retrain_started (drift)'
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from streams.settings import Settings
from streams.spec import PipelineSpec, load_spec

#: With --cycle and no --drift: a shift the drift windows see within seconds.
DEFAULT_DRIFT = "amount=x3"
#: What the variant sets. Drift windows of 2,000 events close every ~2 s at the demo's
#: 1,000 events/s; two at alert level start a retrain, and one retrain per demo (the drift
#: stays on: the trigger keeps holding); 300 paired labels (a few seconds of labels) are
#: enough for a decision. The unserved guard is loosened: the challenger misses the scores
#: of the batches in flight when the worker loads it (0.4-1.6% of the first 1,500-2,000
#: labels, measured), which would refuse any challenger. The latency guard keeps its
#: default since model time is the run's thread CPU time (as wall time it counted the
#: shadow thread's GIL waits: 22-23 us per event against the champion's 12, measured).
CYCLE_WINDOW_EVENTS = 2000
CYCLE_ACTIONS: dict[str, Any] = {
    "retrain": {"on_drift": {"windows": 2}, "min_interval_seconds": 3600},
    "promote": {
        "auto": True,
        "min_labels": 300,
        "unserved_tolerance": 0.01,
    },
}
#: The controller checks this often in the demo (the default, 10 s, would eat a short demo).
CYCLE_CONTROLLER_INTERVAL_SECONDS = 2.0


def cycle_spec_text(spec_path: Path) -> str:
    """The spec at ``spec_path`` as YAML, with the demo's cycle: small drift windows, a
    drift retrain trigger, automatic promotion on a few hundred labels, the challenger
    followed, labelled records kept. Relative paths are made absolute, so the text can be
    written anywhere."""
    raw = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    base = spec_path.resolve().parent
    raw["features"]["repo"] = str(base / raw["features"]["repo"])
    if raw.get("training"):
        raw["training"]["dataset"] = str(base / raw["training"]["dataset"])
    raw.setdefault("monitoring", {})["window"] = {"events": CYCLE_WINDOW_EVENTS}
    actions = raw.setdefault("actions", {})
    for part, values in CYCLE_ACTIONS.items():
        actions[part] = {**actions.get(part, {}), **values}
    raw["model"] = {**raw["model"], "version": "champion", "follow_challenger": True}
    if raw.get("labels") is not None:
        raw["labels"]["keep_labelled"] = True
    return yaml.safe_dump(raw, sort_keys=False)


def write_cycle_spec(spec_path: Path, folder: Path) -> tuple[Path, PipelineSpec]:
    """Write the cycle variant of ``spec_path`` into ``folder``; its path and the spec
    (validated: a variant the controller would refuse stops the demo before it starts)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec_path.stem}.cycle.yaml"
    path.write_text(cycle_spec_text(spec_path), encoding="utf-8")
    return path, load_spec(path)


def cycle_model_dir(spec: PipelineSpec, settings: Settings, folder: Path) -> Path:
    """A fresh copy of the spec's registered models in ``folder``: the cycle moves aliases
    (a retrained challenger, maybe a new champion), which must not outlive the demo in the
    registry later demos start from."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in [spec.model.name, *(s.name for s in spec.shadows)]:
        source = settings.model_dir / name
        if source.is_dir():
            shutil.copytree(source, folder / name)
    return folder


def action_text(record: dict[str, Any]) -> str:
    """One action in a few words: what, which version, and for a decision its metric, the
    gain's interval and the labels it rests on."""
    action = str(record.get("action"))
    version = record.get("to_version")
    text = action if version is None else f"{action} v{version}"
    evidence = record.get("evidence")
    if isinstance(evidence, dict) and evidence.get("metric"):
        interval = evidence.get("interval") or [None, None]
        low, high = (_figure(v) for v in interval)
        text += (
            f": {evidence['metric']} {_figure(evidence.get('champion_value'))} ->"
            f" {_figure(evidence.get('candidate_value'))}, gain CI [{low}, {high}]"
            f" on {evidence.get('labels', 0)} labels"
        )
    reasons = record.get("reasons") or []
    if reasons:
        text += f" ({'; '.join(str(r) for r in reasons)})"
    return text


def _figure(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
