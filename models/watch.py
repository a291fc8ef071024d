"""Notice when a registry alias moves, so a worker can hot-swap its model between batches.

``AliasWatcher.check`` is meant to be called often (every second or so): while the model's
``aliases.json`` keeps its inode, mtime and size it costs one ``os.stat`` and reads
nothing. The registry replaces that file with ``os.replace``, so any change gives it a new
inode even where mtimes are coarse. Only then is the file read; if the alias now names
another version, that version is resolved (manifest read, ONNX sha256 verified) and
returned once.
"""

from __future__ import annotations

import os
from typing import Literal

from models.errors import ModelNotFound
from models.registry import ALIASES_FILE, ModelRegistry, ModelVersion

_Signature = tuple[int, int, int, int] | None


class AliasWatcher:
    """Watches where ``alias`` of model ``name`` points.

    ``current`` is the version the caller is serving now (the one it resolved at
    start-up); the first ``check`` reports the alias's version if it differs, so a move
    between the caller's resolve and the watcher's creation is not missed. When omitted,
    the baseline is wherever the alias points at construction.
    """

    def __init__(
        self, registry: ModelRegistry, name: str, alias: str, current: int | None = None
    ) -> None:
        self.registry = registry
        self.name = name
        self.alias = alias
        self._path = registry.root / name / ALIASES_FILE
        if current is None:
            self._seen: _Signature | Literal["unread"] = self._signature()
            self.version: int = self._pointed_at()
        else:
            self._seen = "unread"  # the first check compares the file with ``current``
            self.version = current
            self._pointed_at()  # fail now on an unknown model or alias

    def check(self) -> ModelVersion | None:
        """The newly resolved version if the alias points elsewhere than last time, else
        None.

        Registry errors (alias gone, version damaged) propagate, and are raised again by
        the next ``check`` until the registry is fixed or the alias moves on: the caller
        keeps serving what it has, and should rate-limit its logging of them.
        """
        signature = self._signature()
        if signature == self._seen:
            return None
        target = self._pointed_at()
        if target == self.version:
            self._seen = signature
            return None
        # By number, not alias: the version read above, even if the alias moves again now.
        resolved = self.registry.resolve(self.name, target)
        self._seen = signature
        self.version = target
        return resolved

    def _signature(self) -> _Signature:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_dev, stat.st_mtime_ns, stat.st_size)

    def _pointed_at(self) -> int:
        aliases = self.registry.aliases(self.name)
        if self.alias not in aliases:
            known = ", ".join(f"{a}->{v}" for a, v in sorted(aliases.items())) or "none"
            detail = f"no such alias ({known})"
            raise ModelNotFound(self.name, self.alias, self._path, detail)
        return aliases[self.alias]
