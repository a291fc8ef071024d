"""Open a Feast feature repo against a Redis URL, apply its definitions, materialize it.

The repo's ``feature_store.yaml`` stays usable by the plain Feast CLI (its Redis connection
string comes from ``${REDIS_CONNECTION_STRING}`` there). streamscore instead builds the
``RepoConfig`` itself from the Redis settings
(``streams.runtime.connections.RedisConnection``: the URL, password and TLS files), so
nothing reads or writes the process environment, and registers
the same objects in the same registry file as ``feast apply``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from feast import FeatureStore, Project, RepoConfig
from feast.repo_contents import RepoContents
from feast.repo_operations import (
    extract_objects_for_apply_delete,
    get_repo_files,
    parse_repo,
    py_path_to_module,
)

from features.errors import FeatureStoreError
from streams.runtime.connections import RedisConnection, redact

STAGE = "features.store"
# How far back to materialize a view without a ttl.
DEFAULT_WINDOW = timedelta(days=365)


def redis_connection_string(redis_url: str, options: Sequence[str] = ()) -> str:
    """Convert ``redis://[[user]:password@]host[:port][/db][?k=v]`` to Feast's form.

    Feast's Redis store wants ``host:port,db=N[,password=...]`` and json-decodes each value,
    so the password is written as a JSON string (a numeric password stays a string).
    ``rediss://`` adds ``ssl=true``; ``options`` (``key=value``) are appended.

    >>> redis_connection_string("redis://:s3cret@cache:6380/2")
    'cache:6380,db=2,password="s3cret"'
    >>> redis_connection_string("redis://127.0.0.1:6379", ['ssl_ca_certs="/ca.pem"'])
    '127.0.0.1:6379,db=0,ssl_ca_certs="/ca.pem"'
    """
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        msg = f"{STAGE}: redis_url {redact(redis_url)!r} is not redis://[:password@]host:port/db"
        raise FeatureStoreError(msg)
    try:
        port = parts.port or 6379
        db = int(parts.path.strip("/") or 0)
    except ValueError as exc:
        msg = f"{STAGE}: redis_url {redact(redis_url)!r} has a bad port or db number"
        raise FeatureStoreError(msg) from exc
    params = [f"{parts.hostname}:{port}", f"db={db}"]
    if parts.username:
        params.append(f"username={json.dumps(unquote(parts.username))}")
    if parts.password is not None:
        params.append(f"password={json.dumps(unquote(parts.password))}")
    if parts.scheme == "rediss":
        params.append("ssl=true")
    params.extend(f"{key}={value}" for key, value in parse_qsl(parts.query))
    params.extend(options)
    if any("," in p.split("=", 1)[-1] for p in params[1:]):
        # Feast splits the connection string on commas; there is no way to escape one.
        msg = (
            f"{STAGE}: redis_url {redact(redis_url)!r}, the Redis password or a Redis TLS"
            " file path has a ',': Feast cannot take one in a value"
        )
        raise FeatureStoreError(msg)
    return ",".join(params)


def open_store(repo: Path, redis: RedisConnection, *, project: str | None = None) -> FeatureStore:
    """A FeatureStore for ``repo`` whose online store is ``redis`` (URL, password, TLS).

    ``project`` overrides the project name (Redis keys are prefixed by it), which lets
    tests share one Redis without seeing each other's rows.
    """
    repo = Path(repo).resolve()
    config_file = repo / "feature_store.yaml"
    try:
        raw = yaml.safe_load(config_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        msg = f"{STAGE}: cannot read Feast config {config_file}: {exc}"
        raise FeatureStoreError(msg) from exc
    if not isinstance(raw, dict):
        msg = f"{STAGE}: {config_file} is not a YAML mapping"
        raise FeatureStoreError(msg)
    online: dict[str, Any] = dict(raw.get("online_store") or {})
    if online.get("type") != "redis":
        msg = f"{STAGE}: {config_file}: online_store.type is {online.get('type')!r}; need 'redis'"
        raise FeatureStoreError(msg)
    online["connection_string"] = redis_connection_string(redis.url, redis.feast_options())
    raw["online_store"] = online
    if project is not None:
        raw["project"] = project
    try:
        # repo_path anchors the relative registry and FileSource paths to the repo folder,
        # whatever the working directory is (what Feast's own yaml loader does too).
        config = RepoConfig(**raw, repo_path=repo)
        return FeatureStore(repo_path=str(repo), config=config)
    except Exception as exc:  # pydantic and Feast raise many types for a bad config
        msg = f"{STAGE}: invalid Feast config {config_file}: {exc}"
        raise FeatureStoreError(msg) from exc


def apply_repo(store: FeatureStore, repo: Path) -> None:
    """Register the repo's definitions, as ``feast apply`` does (removed objects included).

    Honours ``.feastignore``. Feast names each definition module by its path relative to
    the working directory, so parsing runs with the repo as working directory and on
    ``sys.path`` (as the Feast CLI does), both restored afterwards; call it at start-up,
    not while other threads depend on the working directory.
    """
    repo = Path(repo).resolve()
    try:
        contents = _parse(repo)
        if not contents.projects:
            contents.projects.append(Project(name=store.project))
        for view in contents.feature_views:
            if view.batch_source is not None:
                store.provider.validate_data_source(store.config, view.batch_source)
        # What `feast apply` applies and deletes, so the registry mirrors the repo exactly.
        to_apply, to_delete, _, _ = extract_objects_for_apply_delete(  # type: ignore[no-untyped-call]
            store.project, store.registry, contents
        )
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    except FeatureStoreError:
        raise
    except Exception as exc:
        msg = f"{STAGE}: applying feature repo {repo} to project {store.project!r} failed: {exc}"
        raise FeatureStoreError(msg) from exc


def _parse(repo: Path) -> RepoContents:
    with contextlib.chdir(repo), _importable(repo):
        return parse_repo(repo)


def parse_definitions(repo: Path) -> RepoContents:
    """The repo's Feast definitions as ``feast apply`` would read them, without a registry
    or an online store (``streamscore validate``, spec error messages)."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        msg = f"{STAGE}: feature repo {repo} is not a folder (features.repo in the spec)"
        raise FeatureStoreError(msg)
    try:
        return _parse(repo)
    except Exception as exc:  # the repo's own Python code runs here
        msg = f"{STAGE}: cannot read the Feast definitions of {repo}: {exc!r}"
        raise FeatureStoreError(msg) from exc


@contextlib.contextmanager
def _importable(repo: Path) -> Iterator[None]:
    """Put ``repo`` first on sys.path and import its modules afresh; restore both after.

    Two copies of a repo (a test's temp copy and the source tree) share module names such
    as ``definitions``; a cached module would hand back the other copy's objects.
    """
    names = [py_path_to_module(path) for path in get_repo_files(repo)]
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        sys.path.remove(str(repo))
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def materialize(store: FeatureStore, end: datetime | None = None) -> None:
    """Load each view's latest values within its ttl (up to ``end``, default now) into the
    online store.

    Always the whole ttl window, never ``materialize_incremental``: the registry file on disk
    remembers past runs, but the online store may be new (the embedded Redis keeps nothing
    across restarts), and an incremental run would then load nothing at all.
    """
    end = datetime.now(UTC) if end is None else end
    if end.tzinfo is None:
        msg = f"{STAGE}: materialize end must be timezone-aware, got {end.isoformat()}"
        raise FeatureStoreError(msg)
    try:
        for view in store.list_feature_views():
            window = view.ttl if view.ttl else DEFAULT_WINDOW
            store.materialize(start_date=end - window, end_date=end, feature_views=[view.name])
    except Exception as exc:
        msg = f"{STAGE}: materializing project {store.project!r} up to {end.isoformat()}: {exc}"
        raise FeatureStoreError(msg) from exc
