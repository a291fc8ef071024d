"""Notice when a registry alias moves, so a worker can hot-swap its model between batches.

``AliasWatcher.check`` is meant to be called often (every second or so): while the model's
``aliases.json`` keeps its inode, mtime and size it costs one ``os.stat`` and reads
nothing. The registry replaces that file with ``os.replace``, so any change gives it a new
inode even where mtimes are coarse. Only then is the file read; if the alias now names
another version, that version number is returned once. Whether the version can serve is
the caller's question (``models.fitness``): the watcher only reports moves, so a move to a
damaged version is reported once, like any other.
"""

from __future__ import annotations

import os
from typing import Literal

from models.registry import ALIASES_FILE, ModelRegistry

Signature = tuple[int, int, int, int] | None


def file_signature(path: os.PathLike[str] | str) -> Signature:
    """What tells one version of ``aliases.json`` from the next without reading it: its
    inode, device, mtime and size (None while there is no file)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_dev, stat.st_mtime_ns, stat.st_size)


class AliasWatcher:
    """Watches where ``alias`` of model ``name`` points.

    ``current`` is the version the alias pointed at when the caller resolved it at start-up;
    the first ``check`` reports the alias's version if it differs, so a move between the
    caller's resolve and the watcher's creation is not missed. When omitted, the baseline
    is wherever the alias points at construction.
    """

    def __init__(
        self, registry: ModelRegistry, name: str, alias: str, current: int | None = None
    ) -> None:
        self.registry = registry
        self.name = name
        self.alias = alias
        self._path = registry.root / name / ALIASES_FILE
        if current is None:
            self._seen: Signature | Literal["unread"] = self._signature()
            self.version: int = self._pointed_at()
        else:
            self._seen = "unread"  # the first check compares the file with ``current``
            self.version = current
            self._pointed_at()  # fail now on an unknown model or alias

    def check(self) -> int | None:
        """The version the alias points at if it moved since the last report, else None.

        ``version`` is then that version. Registry errors (alias removed, ``aliases.json``
        unreadable) propagate and are raised again by the next ``check`` until the file is
        fixed: the caller keeps serving what it has, and should rate-limit its logging.
        """
        signature = self._signature()
        if signature == self._seen:
            return None
        target = self._pointed_at()
        self._seen = signature
        if target == self.version:
            return None
        self.version = target
        return target

    def _signature(self) -> Signature:
        return file_signature(self._path)

    def _pointed_at(self) -> int:
        return self.registry.alias_version(self.name, self.alias)
