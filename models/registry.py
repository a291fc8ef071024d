"""A versioned model registry on a plain folder, safe to read while it is written.

Layout (one folder per model name)::

    <root>/<name>/<version>/model.onnx      the artifact, never changed after registration
    <root>/<name>/<version>/manifest.json   what it is (see models/manifest.py)
    <root>/<name>/<version>/reference_profile.json   its training reference profile (JSON,
                                            named and hashed in the manifest; optional)
    <root>/<name>/aliases.json              alias -> version, plus the history of changes

A version folder is staged under a hidden name and published with one ``os.rename``, and
``aliases.json`` is replaced with ``os.replace``: a worker reading concurrently sees either
the old state or the new one, never half a file. Writers on one host serialize on a lock
file per model. The alias history records every move (with the previous version) so a
promote/rollback command can undo the last change without guessing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import AliasMoved, ModelIntegrityError, ModelNotFound, RegistryError
from models.manifest import ArtifactRef, Manifest, ManifestFields
from models.profile import PROFILE_FILE, ReferenceProfile

CHAMPION = "champion"
#: The version ``streamscore train --from-stream`` registers; workers score it in shadow.
CHALLENGER = "challenger"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"
_LOCK_FILE = ".lock"


class _Any:
    """``set_alias(expected=ANY)``: set whatever the alias points at now."""


ANY = _Any()
# No leading dot: hidden names are the registry's own staging and lock files (and '..').
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Aliases never start with a digit, so "3" always means version 3.
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_VERSION = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: where it lives and its manifest."""

    name: str
    version: int
    path: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL_FILE

    def read_onnx(self) -> bytes:
        """The ONNX bytes, checked against the manifest's sha256 so a damaged or swapped
        file is never scored."""
        try:
            data = self.onnx_path.read_bytes()
        except OSError as exc:
            msg = f"cannot read {MODEL_FILE}: {exc.strerror}"
            raise ModelIntegrityError(self.name, self.version, self.path, msg) from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.manifest.onnx_sha256:
            msg = (
                f"{MODEL_FILE} sha256 {digest} does not match the manifest's"
                f" {self.manifest.onnx_sha256}: the file changed after registration"
            )
            raise ModelIntegrityError(self.name, self.version, self.path, msg)
        return data

    def read_profile(self) -> ReferenceProfile | None:
        """The reference profile, checked against the manifest's sha256 and parsed as JSON
        data (never unpickled); None for a version registered without one."""
        ref = self.manifest.reference_profile
        if ref is None:
            return None
        try:
            data = (self.path / ref.file).read_bytes()
        except OSError as exc:
            msg = f"cannot read {ref.file}: {exc.strerror}"
            raise ModelIntegrityError(self.name, self.version, self.path, msg) from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref.sha256:
            msg = (
                f"{ref.file} sha256 {digest} does not match the manifest's {ref.sha256}:"
                " the file changed after registration"
            )
            raise ModelIntegrityError(self.name, self.version, self.path, msg)
        try:
            return ReferenceProfile.model_validate_json(data)
        except ValidationError as exc:
            msg = f"{ref.file} is not a valid reference profile: {exc}"
            raise ModelIntegrityError(self.name, self.version, self.path, msg) from exc


class AliasChange(BaseModel):
    """One move of an alias; ``previous`` is what a rollback returns to. ``version`` None:
    the alias was removed (a canary rolled back)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    alias: str
    version: int | None
    previous: int | None
    at: str


class _AliasFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal[1] = 1
    aliases: dict[str, int] = Field(default_factory=dict)
    history: list[AliasChange] = Field(default_factory=list)


class ModelRegistry:
    """Registers, lists and resolves model versions under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Models with at least one version (a failed first registration leaves none)."""
        if not self.root.is_dir():
            return []
        folders = (p for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))
        return sorted(p.name for p in folders if _version_numbers(p))

    def versions(self, name: str) -> list[int]:
        return _version_numbers(self._model_dir(name))

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._read_aliases(self._model_dir(name)).aliases)

    def alias_history(self, name: str) -> list[AliasChange]:
        return list(self._read_aliases(self._model_dir(name)).history)

    def resolve(self, name: str, version_or_alias: str | int) -> ModelVersion:
        """The version a number ("3") or an alias ("champion") names, its ONNX file verified."""
        folder = self._model_dir(name)
        ref = str(version_or_alias)
        if _VERSION.fullmatch(ref):
            version = int(ref)
        elif not _ALIAS.fullmatch(ref):
            raise ModelNotFound(name, ref, folder, "neither a version number nor an alias name")
        else:
            version = self.alias_version(name, ref)
        found = self._load(name, version, folder, asked=ref)
        found.read_onnx()
        return found

    def version(self, name: str, version: int) -> ModelVersion:
        """Version ``version`` of ``name`` by its manifest alone (its ONNX file not read)."""
        return self._load(name, version, self._model_dir(name), asked=str(version))

    def alias_version(self, name: str, alias: str) -> int:
        """The version ``alias`` points at now (``ModelNotFound`` if it is not set)."""
        folder = self._model_dir(name)
        aliases = self._read_aliases(folder).aliases
        if alias not in aliases:
            known = ", ".join(f"{a}->{v}" for a, v in sorted(aliases.items())) or "none"
            raise ModelNotFound(name, alias, folder / ALIASES_FILE, f"no such alias ({known})")
        return aliases[alias]

    def set_alias(
        self, name: str, alias: str, version: int, *, expected: int | None | _Any = ANY
    ) -> None:
        """Point ``alias`` at an existing ``version`` (atomically, recorded in the history).

        With ``expected`` (a version, or None for "not set"), it is a compare-and-set: if the
        alias no longer points there when the lock is held, ``AliasMoved`` is raised and
        nothing changes, so two concurrent promotions cannot silently overwrite each other.
        """
        if not _ALIAS.fullmatch(alias):
            msg = f"alias {alias!r} of model {name!r} is not valid: start with a letter or '_'"
            raise RegistryError(msg)
        folder = self._model_dir(name)
        with _locked(folder):
            self._load(name, version, folder, asked=str(version))
            if not isinstance(expected, _Any):
                found = self._read_aliases(folder).aliases.get(alias)
                if found != expected:
                    raise AliasMoved(name, alias, expected, found)
            self._move_alias(folder, alias, version)

    def remove_alias(self, name: str, alias: str, *, expected: int | None | _Any = ANY) -> int:
        """Remove ``alias`` (``ModelNotFound`` if it is not set), recorded in the history;
        returns the version it pointed at. The champion cannot be removed: workers serve
        it. With ``expected``, only while it still points there (else ``AliasMoved``): a
        rollback never removes a version someone set meanwhile."""
        if alias == CHAMPION:
            msg = f"model {name!r}: the {CHAMPION!r} alias cannot be removed (workers serve it)"
            raise RegistryError(msg)
        folder = self._model_dir(name)
        with _locked(folder):
            current = self._read_aliases(folder)
            if not isinstance(expected, _Any) and current.aliases.get(alias) != expected:
                raise AliasMoved(name, alias, expected, current.aliases.get(alias))
            version = self.alias_version(name, alias)
            change = AliasChange(alias=alias, version=None, previous=version, at=_now())
            aliases = {a: v for a, v in current.aliases.items() if a != alias}
            updated = _AliasFile(aliases=aliases, history=[*current.history, change])
            self._write_aliases(folder, updated)
        return version

    def retire_challenger(self, name: str, promoted: int) -> bool:
        """After ``promoted`` became the champion: remove the challenger alias if it still
        names that version (recorded in the history), so that workers stop scoring the
        champion a second time in shadow. False when it names another version, or none."""
        try:
            self.remove_alias(name, CHALLENGER, expected=promoted)
        except AliasMoved:
            return False
        return True

    def register(
        self,
        name: str,
        onnx_bytes: bytes,
        fields: ManifestFields,
        *,
        profile: ReferenceProfile | None = None,
    ) -> ModelVersion:
        """Store a new version (the next number) and return it; the first version of a
        name also becomes the ``champion``. ``profile``, the training reference profile, is
        stored beside the model, named and hashed in the manifest."""
        _check_name(name)
        folder = self.root / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create registry folder {folder} for model {name!r}: {exc.strerror}"
            raise RegistryError(msg) from exc
        with _locked(folder):
            version = max(_version_numbers(folder), default=0) + 1
            profile_json = (
                None if profile is None else orjson.dumps(profile.model_dump(mode="json"))
            )
            profile_ref = (
                None
                if profile_json is None
                else ArtifactRef(file=PROFILE_FILE, sha256=hashlib.sha256(profile_json).hexdigest())
            )
            manifest = Manifest.model_validate(
                {
                    **fields.model_dump(),
                    "name": name,
                    "version": version,
                    "created": _now(),
                    "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
                    "reference_profile": profile_ref,
                }
            )
            target = folder / str(version)
            staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=folder))
            try:
                staging.chmod(0o755)  # mkdtemp makes it 0o700; workers may run as another user
                _atomic_write(staging / MODEL_FILE, onnx_bytes)
                if profile_json is not None:
                    _atomic_write(staging / PROFILE_FILE, profile_json)
                manifest_json = orjson.dumps(manifest.model_dump(mode="json"), option=_JSON)
                _atomic_write(staging / MANIFEST_FILE, manifest_json)
                # One rename publishes model and manifest together; it fails rather than
                # overwrite if the version folder somehow exists.
                os.rename(staging, target)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                msg = f"cannot register model {name!r} version {version} in {folder}: {exc}"
                raise RegistryError(msg) from exc
            if CHAMPION not in self._read_aliases(folder).aliases:
                self._move_alias(folder, CHAMPION, version)
        return ModelVersion(name, version, target, manifest)

    def _model_dir(self, name: str) -> Path:
        _check_name(name)
        folder = self.root / name
        if not folder.is_dir():
            raise ModelNotFound(name, None, self.root, f"no such model (models: {self.names()})")
        return folder

    def _load(self, name: str, version: int, folder: Path, asked: str) -> ModelVersion:
        path = folder / str(version)
        try:
            raw = (path / MANIFEST_FILE).read_bytes()
        except FileNotFoundError as exc:
            detail = f"no version {version} (versions: {_version_numbers(folder)})"
            raise ModelNotFound(name, asked, folder, detail) from exc
        except OSError as exc:
            msg = f"cannot read {MANIFEST_FILE}: {exc.strerror}"
            raise ModelIntegrityError(name, version, path, msg) from exc
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as exc:
            msg = f"{MANIFEST_FILE} is not a valid manifest: {exc}"
            raise ModelIntegrityError(name, version, path, msg) from exc
        if (manifest.name, manifest.version) != (name, version):
            msg = f"{MANIFEST_FILE} describes {manifest.name!r} version {manifest.version}"
            raise ModelIntegrityError(name, version, path, msg)
        return ModelVersion(name, version, path, manifest)

    def _read_aliases(self, folder: Path) -> _AliasFile:
        path = folder / ALIASES_FILE
        try:
            return _AliasFile.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return _AliasFile()
        except (OSError, ValidationError) as exc:
            msg = f"cannot read the aliases of model {folder.name!r} from {path}: {exc}"
            raise RegistryError(msg) from exc

    def _move_alias(self, folder: Path, alias: str, version: int) -> None:
        """Caller holds the model's lock: read-modify-write of aliases.json."""
        current = self._read_aliases(folder)
        change = AliasChange(
            alias=alias, version=version, previous=current.aliases.get(alias), at=_now()
        )
        updated = _AliasFile(
            aliases={**current.aliases, alias: version}, history=[*current.history, change]
        )
        self._write_aliases(folder, updated)

    def _write_aliases(self, folder: Path, updated: _AliasFile) -> None:
        try:
            _atomic_write(folder / ALIASES_FILE, orjson.dumps(updated.model_dump(), option=_JSON))
        except OSError as exc:
            msg = f"cannot write the aliases of model {folder.name!r} in {folder}: {exc}"
            raise RegistryError(msg) from exc


_JSON = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        msg = f"model name {name!r} is not valid: letters, digits, '.', '_', '-', no leading '.'"
        raise RegistryError(msg)


def _version_numbers(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if _VERSION.fullmatch(p.name))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then ``os.replace`` over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0o600; readers may be another user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialize writers of one model (register, set_alias) across processes on this host."""
    with open(folder / _LOCK_FILE, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
