"""The models package's error hierarchy, rooted in ``StreamscoreError``.

Every error carries what was asked for (model name, version or alias, path) as attributes
as well as in its message, so the worker and the CLI can react by type and a person reading
the log knows which artifact to look at without re-running anything.
"""

from __future__ import annotations

from pathlib import Path

from streams.errors import StreamscoreError


class ModelError(StreamscoreError):
    """Root of every error raised on purpose by ``models/``."""


class RegistryError(ModelError):
    """The registry cannot serve a request: bad name, unreadable or corrupt files."""


class ModelNotFound(RegistryError):
    """No model, version or alias matches what was asked for.

    ``ref`` is what the caller asked for (``None`` when the whole name is unknown); ``path``
    is where the registry looked.
    """

    def __init__(self, name: str, ref: str | None, path: Path, detail: str) -> None:
        asked = f"model {name!r}" if ref is None else f"model {name!r} version/alias {ref!r}"
        super().__init__(f"{asked} not found: {detail} (looked in {path})")
        self.name = name
        self.ref = ref
        self.path = path
        self.detail = detail


class ModelIntegrityError(RegistryError):
    """A stored artifact does not match its manifest (e.g. the ONNX file's sha256)."""

    def __init__(self, name: str, version: int, path: Path, detail: str) -> None:
        super().__init__(f"model {name!r} version {version} at {path}: {detail}")
        self.name = name
        self.version = version
        self.path = path
        self.detail = detail


class AliasMoved(RegistryError):
    """An alias changed between reading it and setting it (a concurrent promote or
    rollback); nothing was written."""

    def __init__(self, name: str, alias: str, expected: int | None, found: int | None) -> None:
        def show(v: int | None) -> str:
            return "nothing" if v is None else f"version {v}"

        super().__init__(
            f"alias {alias!r} of model {name!r} moved meanwhile: expected {show(expected)},"
            f" found {show(found)}; nothing changed, look again and retry"
        )
        self.expected, self.found = expected, found


class ScoringError(ModelError):
    """A model cannot be loaded for scoring or a scoring call failed."""

    def __init__(self, name: str, version: int, detail: str) -> None:
        super().__init__(f"model {name!r} version {version}: {detail}")
        self.name = name
        self.version = version
        self.detail = detail


class ModelInputError(ScoringError):
    """The input matrix does not fit the model (wrong shape or columns).

    This is a wiring error between the spec and the model, not one bad event: every event
    of the batch would fail the same way, so it is never dead-lettered per message.
    """


class ModelRefused(ModelError):
    """A version cannot serve: it does not load, or does not fit its manifest or a spec.

    ``reason`` is one of ``models.fitness.REFUSAL_REASONS`` (a stable metric label);
    the message names the model, the version and what is wrong, in one line.
    """

    def __init__(self, name: str, version: int, reason: str, detail: str) -> None:
        super().__init__(f"model {name!r} version {version} refused ({reason}): {detail}")
        self.name = name
        self.version = version
        self.reason = reason
        self.detail = detail


class NoServableVersion(ModelError):
    """Neither the version a spec names nor any earlier version of its alias can serve."""


class TrainingError(ModelError):
    """Training cannot produce a trustworthy model.

    ``name`` is what was being trained: a ``training.models`` entry, or the pipeline when
    the problem is in the shared data (dataset, labels, features).
    """

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"training {name!r}: {detail}")
        self.name = name
