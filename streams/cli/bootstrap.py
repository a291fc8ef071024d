"""Getting a pipeline ready to run: offline data, Feast apply + materialize, training.

Used by ``streamscore demo``, ``streamscore train``, the integration tests and the load
tests, so all of them prepare a pipeline the same way.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from features.store import apply_repo, materialize, open_store
from models.errors import ModelNotFound
from models.registry import ModelRegistry, ModelVersion
from streams.cli.generators import offline_data_writer
from streams.errors import SpecError
from streams.runtime.connections import RedisConnection
from streams.settings import Settings
from streams.spec import PipelineSpec, load_spec

log = logging.getLogger(__name__)


def ensure_offline_data(spec: PipelineSpec) -> None:
    """Create the repo's offline data with the spec's generator plugin if it is missing."""
    if spec.training is None or spec.training.dataset.exists():
        return
    writer = offline_data_writer(spec)
    if writer is None:
        msg = (
            f"spec {spec.name}: training dataset {spec.training.dataset} does not exist and the"
            " spec's generator has no write_offline_data() to create it"
        )
        raise SpecError(msg)
    log.info("writing offline data for %s into %s", spec.name, spec.features.repo)
    writer(spec.features.repo)


def prepare_features(spec: PipelineSpec, settings: Settings) -> None:
    """Offline data if missing, then feast apply and materialize into the online store."""
    ensure_offline_data(spec)
    store = open_store(spec.features.repo, RedisConnection.from_settings(settings))
    apply_repo(store, spec.features.repo)
    materialize(store)


def train_if_needed(
    spec: PipelineSpec, settings: Settings, *, force: bool = False
) -> list[ModelVersion]:
    """Train the spec's models unless its primary model already resolves (or ``force``)."""
    registry = ModelRegistry(settings.model_dir)
    if not force:
        try:
            registry.resolve(spec.model.name, spec.model.version)
        except ModelNotFound:
            pass
        else:
            return []
    if spec.training is None:
        msg = (
            f"spec {spec.name}: model {spec.model.name!r} is not registered"
            " and the spec declares no 'training'"
        )
        raise SpecError(msg)
    from models.training import load_training_frame, train_models  # sklearn only when training

    ensure_offline_data(spec)
    store = open_store(spec.features.repo, RedisConnection.from_settings(settings))
    apply_repo(store, spec.features.repo)
    frame = load_training_frame(spec, store)
    return train_models(spec, frame, registry)


def prepare_copy(
    spec_path: Path, workdir: Path, settings: Settings
) -> tuple[PipelineSpec, list[ModelVersion]]:
    """The spec with its Feast repo copied into ``workdir/repo`` (kept if already there),
    applied, materialized and its models trained if needed: an isolated pipeline for the
    integration tests and the load tests, leaving the source repo untouched.

    Returns the prepared spec and what was trained (empty when the models were there)."""
    source = load_spec(spec_path)
    repo = workdir / "repo"
    if not repo.exists():
        shutil.copytree(
            source.features.repo, repo, ignore=shutil.ignore_patterns("data", "__pycache__")
        )
    update: dict[str, Any] = {"features": source.features.model_copy(update={"repo": repo})}
    if source.training is not None:
        relative = source.training.dataset.relative_to(source.features.repo)
        update["training"] = source.training.model_copy(update={"dataset": repo / relative})
    spec = source.model_copy(update=update)
    prepare_features(spec, settings)
    return spec, train_if_needed(spec, settings)
