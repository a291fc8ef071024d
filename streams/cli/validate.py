"""``streamscore validate``: check a spec, its Feast repo, its models and the settings in
seconds, with no broker or Redis: what a worker would refuse at start, found before a deploy.

Each check gives one ``Check`` (a line of the report). Faust is never imported here, and
the Feast repo is read from its definitions, not from a registry or an online store.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.errors import StreamscoreError
from streams.settings import Settings, load_settings, unknown_variables
from streams.spec import ModelRef, PipelineSpec, ShadowRef, load_spec


@dataclass(frozen=True)
class Check:
    ok: bool
    what: str  # the stage: settings, spec, features, model NAME
    detail: str

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.what}: {self.detail}"


def validate(spec_path: Path, environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every check that can run; a failed spec stops the checks that need it."""
    checks = list(_settings(environ))
    settings = _loaded_settings()
    try:
        spec = load_spec(spec_path)
    except StreamscoreError as exc:
        return [*checks, Check(False, "spec", str(exc))]
    columns = len(spec.input_columns())
    checks.append(Check(True, "spec", f"{spec_path}: pipeline {spec.name!r}, {columns} inputs"))
    checks.extend(_features(spec))
    if settings is not None:
        refs: list[ModelRef | ShadowRef] = [spec.model, *spec.shadows]
        checks.extend(_model(spec, ref, settings) for ref in refs)
    return checks


def _loaded_settings() -> Settings | None:
    try:
        return load_settings()
    except StreamscoreError:
        return None


def _settings(environ: Mapping[str, str] | None) -> Iterator[Check]:
    try:
        settings = load_settings()
    except StreamscoreError as exc:
        yield Check(False, "settings", str(exc))
    else:
        yield Check(
            True,
            "settings",
            f"model registry {settings.model_dir}, worker state {settings.data_dir}",
        )
    for warning in unknown_variables(environ):
        yield Check(False, "settings", warning)


def _features(spec: PipelineSpec) -> Iterator[Check]:
    from features.definitions import RepoFeatures  # Feast: imported only for this check

    try:
        repo = RepoFeatures.read(spec.features.repo)
    except StreamscoreError as exc:
        yield Check(False, "features", str(exc))
        return
    problems = repo.unknown(spec.features.refs)
    for problem in problems:
        yield Check(False, "features", problem)
    if not problems:
        refs = len(spec.features.refs)
        yield Check(True, "features", f"{refs} refs defined in the Feast repo {repo.repo}")
    if spec.features.service is not None:
        mismatch = repo.service_mismatch(spec.features.service, spec.features.refs)
        detail = mismatch or f"feature service {spec.features.service!r} serves exactly the refs"
        yield Check(mismatch is None, "features", detail)
    limits = spec.features.max_age_by_view()
    if limits:  # the spec refused unknown views already; say what the policy is
        policy = ", ".join(f"{view} at most {age:g} s old" for view, age in limits.items())
        unlimited = [view for view in spec.features.views if view not in limits]
        rest = f"; no limit for {', '.join(unlimited)}" if unlimited else ""
        yield Check(True, "features", f"feature freshness: {policy} at event time{rest}")


def _model(spec: PipelineSpec, ref: ModelRef | ShadowRef, settings: Settings) -> Check:
    from models.fitness import Layout, load_checked
    from models.registry import ModelRegistry

    role = "primary" if isinstance(ref, ModelRef) else "shadow"
    what = f"model {ref.name}@{ref.version} ({role})"
    registry = ModelRegistry(settings.model_dir)
    try:
        version = registry.resolve(ref.name, ref.version).version
        scorer = load_checked(registry, ref.name, version, [Layout.of(spec)])
    except StreamscoreError as exc:
        return Check(False, what, f"{exc} (the registry is STREAMSCORE_MODEL_DIR)")
    return Check(True, what, f"version {version} loads and takes the spec's {scorer.width} inputs")
