"""Whether a model version can serve, asked before an alias moves and before a worker swaps.

A version *loads* when its manifest reads, its ONNX file matches the manifest's sha256,
ONNX Runtime builds a session from it, the session's input width is the manifest's number
of input columns, its output suits the manifest's task and one row of zeros scores. It
*fits* a spec when the manifest's input columns are the spec's ``model_input`` layout, in
order. ``streamscore models promote/rollback`` refuse a version that does not load or fit
(``models/cli.py``); a worker refuses to swap to one, and at start falls back to the
newest earlier version of its alias that does (``load_serving``), so one bad artifact
behind an alias never takes every worker down.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import (
    ModelInputError,
    ModelIntegrityError,
    ModelNotFound,
    ModelRefused,
    NoServableVersion,
    ScoringError,
)
from models.registry import ModelRegistry
from models.scorer import OnnxScorer
from streams.spec import PipelineSpec

#: Why a version was refused; stable values of the refusals metric's ``reason`` label.
#: missing: no such version; damaged: manifest unreadable or ONNX sha256 differs;
#: unloadable: ONNX Runtime cannot load or run it as its manifest describes (input type,
#: output); width: its input width is not the manifest's column count; columns: the
#: manifest's input columns are not a spec's model_input layout.
REFUSAL_REASONS = ("missing", "damaged", "unloadable", "width", "columns")


@dataclass(frozen=True)
class Layout:
    """The model input columns of one spec, named for messages."""

    spec: str
    columns: tuple[str, ...]

    @classmethod
    def of(cls, spec: PipelineSpec) -> Layout:
        return cls(spec.name, tuple(spec.input_columns()))


def layouts_using(specs: Iterable[PipelineSpec], name: str) -> list[Layout]:
    """The layouts of the specs that score with model ``name`` (as primary or shadow)."""
    return [
        Layout.of(spec)
        for spec in specs
        if name == spec.model.name or any(shadow.name == name for shadow in spec.shadows)
    ]


def load_checked(
    registry: ModelRegistry, name: str, version: int, layouts: Sequence[Layout] = ()
) -> OnnxScorer:
    """A scorer for ``version`` of ``name`` if it loads and fits every layout, else
    ``ModelRefused`` naming the first thing wrong."""
    try:
        scorer = OnnxScorer.from_version(registry.resolve(name, version))
        scorer.score(np.zeros((1, scorer.width), dtype=np.float32))  # it runs, not only loads
    except ModelNotFound as exc:
        raise ModelRefused(name, version, "missing", str(exc)) from exc
    except ModelIntegrityError as exc:
        raise ModelRefused(name, version, "damaged", exc.detail) from exc
    except ModelInputError as exc:
        raise ModelRefused(name, version, "width", exc.detail) from exc
    except ScoringError as exc:
        raise ModelRefused(name, version, "unloadable", exc.detail) from exc
    for layout in layouts:
        try:
            scorer.require_columns(layout.columns)
        except ModelInputError as exc:
            detail = f"does not fit spec {layout.spec!r}: {exc.detail}"
            raise ModelRefused(name, version, "columns", detail) from exc
    return scorer


@dataclass(frozen=True)
class Serving:
    """The version a worker serves for one model reference of its spec, and why."""

    scorer: OnnxScorer
    alias: str | None  # None when the spec pins a version number
    alias_version: int | None  # where the alias pointed when it was read
    refused: ModelRefused | None = None  # the alias's version, when it cannot serve
    passed_over: tuple[ModelRefused, ...] = ()  # earlier versions that cannot serve either


def load_serving(
    registry: ModelRegistry, name: str, ref: str, layouts: Sequence[Layout]
) -> Serving:
    """Load what a worker serves for ``name`` at ``ref`` (a version number or an alias).

    A pinned version must load and fit. For an alias, if the version it points at does
    not, the newest earlier version in the alias's history that does is served instead
    (the history records every version the alias pointed at, and a rollback returns to
    them too). ``NoServableVersion`` if none does.
    """
    if ref.isdigit():
        return Serving(load_checked(registry, name, int(ref), layouts), None, None)
    target = registry.alias_version(name, ref)
    try:
        return Serving(load_checked(registry, name, target, layouts), ref, target)
    except ModelRefused as refused:
        passed_over: list[ModelRefused] = []
        for earlier in _earlier_versions(registry, name, ref, target):
            try:
                scorer = load_checked(registry, name, earlier, layouts)
            except ModelRefused as also:
                passed_over.append(also)
                continue
            return Serving(scorer, ref, target, refused, tuple(passed_over))
        tried = ", ".join(f"{r.version} ({r.reason})" for r in passed_over) or "none"
        msg = (
            f"{refused}; and no earlier version of alias {ref!r} can serve instead (tried: {tried})"
        )
        raise NoServableVersion(msg) from refused


def _earlier_versions(registry: ModelRegistry, name: str, alias: str, current: int) -> list[int]:
    """Versions ``alias`` pointed at before, the most recent first, each once."""
    seen = {current}
    out = []
    for change in reversed(registry.alias_history(name)):
        if change.alias == alias and change.version is not None and change.version not in seen:
            seen.add(change.version)
            out.append(change.version)
    return out
