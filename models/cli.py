"""``streamscore models``: list the registry, promote a version to an alias (``--if-better``:
only on the pipeline's evidence), roll back, and the history of these actions.

The registry root is ``STREAMSCORE_MODEL_DIR`` (``Settings.model_dir``). Every error names
the model and the version or alias and exits with status 2. A worker watching the alias
(``models/watch.py``) switches to the new version between two batches, so promote and
rollback first check that the version loads in ONNX Runtime, matches its manifest and fits
the layout of every ``--spec`` that uses the model (``models/fitness.py``): a version that
does not is refused in one line and the alias does not move. With ``--spec``, each promotion,
refusal and rollback is recorded on the spec's actions topic (``streams/actions/``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from models.errors import ModelIntegrityError, ModelNotFound, RegistryError
from models.fitness import Layout, layouts_using, load_checked
from models.registry import ALIASES_FILE, CHALLENGER, CHAMPION, ModelRegistry
from streams.actions import commands
from streams.actions.record import Action, action_record, who
from streams.errors import StreamscoreError
from streams.settings import Settings, load_settings
from streams.spec import PipelineSpec, load_spec

models_app = typer.Typer(
    help="The model registry: versions, aliases, promote, roll back, history.",
    no_args_is_help=True,
)

AliasOption = Annotated[str, typer.Option("--alias", "-a", help="The alias to move.")]
SpecsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--spec",
        "-s",
        help="A pipeline spec that uses the model (repeatable): the version's input columns"
        " must be its model_input layout.",
    ),
]


def _err() -> Console:
    # Made per call, so the terminal width and the stream are those of this invocation.
    return Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    # soft_wrap: one message stays one line, whatever the terminal's width.
    _err().print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _registry() -> ModelRegistry:
    return ModelRegistry(_settings().model_dir)


def _settings() -> Settings:
    try:
        return load_settings()
    except StreamscoreError as exc:
        raise _fail(str(exc)) from exc


#: Where actions are recorded (tests replace it with a list).
action_sink: Callable[[Settings], commands.ActionSink] = commands.KafkaActionSink


@models_app.command("list")
def list_models(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
) -> None:
    """Every model's versions: created time, offline metrics, and the aliases on each."""
    registry = _registry()
    try:
        names = [name] if name is not None else registry.names()
        rows = [(model, *_describe(registry, model)) for model in names]
    except StreamscoreError as exc:
        raise _fail(str(exc)) from exc
    if not rows:
        _err().print(f"no models in {escape(str(registry.root))}", highlight=False)
        return
    table = Table(title=f"models in {escape(str(registry.root))}", box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("estimator / offline metrics", overflow="fold", min_width=22)
    for model, versions, aliases in rows:
        for version, created, estimator, metrics in versions:
            pointing = ", ".join(sorted(a for a, v in aliases.items() if v == version))
            details = f"[bold]{escape(estimator)}[/bold]\n{metrics}"
            table.add_row(model, str(version), pointing, created, details)
    Console().print(table)


def _describe(
    registry: ModelRegistry, name: str
) -> tuple[list[tuple[int, str, str, str]], dict[str, int]]:
    versions = []
    for version in registry.versions(name):
        try:
            manifest = registry.resolve(name, version).manifest
        except ModelIntegrityError as exc:
            versions.append((version, "?", "?", f"[red]damaged:[/red] {escape(str(exc))}"))
            continue
        metrics = escape("\n".join(f"{k}={v:.4g}" for k, v in sorted(manifest.metrics.items())))
        versions.append((version, _when(manifest.created), manifest.estimator, metrics))
    return versions, registry.aliases(name)


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


@models_app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(min=1, help="Version to point the alias at.")],
    alias: AliasOption = CHAMPION,
    specs: SpecsOption = None,
    if_better: Annotated[
        bool,
        typer.Option(
            "--if-better",
            help="Only if the spec's evidence says VERSION beats the alias's version on the"
            " same labelled events (actions.promote: metric, margin, min_labels, guards);"
            " else refuse, with the reasons, and exit 1.",
        ),
    ] = False,
) -> None:
    """Point ALIAS (default champion) at VERSION of NAME, once the version is checked: it
    loads in ONNX Runtime, its width and output match its manifest, and its input columns
    are the layout of every --spec that uses NAME. With --spec the promotion (or refusal) is
    recorded on each such spec's actions topic."""
    registry = _registry()
    using = _specs_using(specs or [], name)
    layouts = [Layout.of(spec) for spec in using]
    if if_better and len(using) != 1:
        msg = (
            "--if-better decides on one pipeline's evidence: give exactly one --spec that uses"
            f" {name!r} (got {len(using)})"
        )
        raise _fail(msg)
    settings = _settings()
    sink = _checked_sink(settings, using)
    evidence: dict[str, Any] | None = None
    try:
        load_checked(registry, name, version, layouts)
        before = registry.aliases(name).get(alias)
        if before == version:
            _err().print(f"{name}: {alias} already points at version {version}", highlight=False)
            return
        if if_better:
            if before is None:
                msg = f"alias {alias!r} points at no version to compare with"
                raise RegistryError(msg)
            decision = commands.decide(settings, using[0], name, before, version)
            Console().print(commands.decision_table(decision, using[0].name))
            evidence = decision.evidence()
            if not decision.promote:
                _record(sink, using, "refusal", name, alias, before, version, evidence)
                for reason in decision.reasons:
                    _err().print(f"refused: {escape(reason)}", highlight=False, soft_wrap=True)
                _err().print(
                    f"{name}: {alias} stays at version {before}", highlight=False, soft_wrap=True
                )
                raise typer.Exit(1)
        registry.set_alias(name, alias, version, expected=before)
    except StreamscoreError as exc:
        msg = f"cannot promote {name} version {version} to {alias!r}: {exc}"
        raise _fail(msg) from exc
    was = "nothing" if before is None else f"version {before}"
    _err().print(f"{name}: {alias} -> version {version} (was {was})", highlight=False)
    if alias == CHAMPION and registry.retire_challenger(name, version):
        _err().print(
            f"{name}: {CHALLENGER} alias removed (version {version} serves as {CHAMPION})",
            highlight=False,
        )
    _note_unchecked_columns(layouts)
    _record(sink, using, "promotion", name, alias, before, version, evidence)


@models_app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: AliasOption = CHAMPION,
    specs: SpecsOption = None,
) -> None:
    """Move ALIAS back to the version it pointed at before its last change, checked as
    promote checks it.

    A rollback is itself a change: running it twice restores where the alias was.
    """
    registry = _registry()
    using = _specs_using(specs or [], name)
    layouts = [Layout.of(spec) for spec in using]
    sink = _checked_sink(_settings(), using)
    try:
        target, current = _rollback_target(registry, name, alias)
        load_checked(registry, name, target, layouts)
        registry.set_alias(name, alias, target, expected=current)
    except StreamscoreError as exc:
        msg = f"cannot roll back {name} {alias!r}: {exc}"
        raise _fail(msg) from exc
    message = f"{name}: {alias} -> version {target} (was version {current})"
    _err().print(message, highlight=False)
    _note_unchecked_columns(layouts)
    _record(sink, using, "rollback", name, alias, current, target, None)


@models_app.command()
def history(
    spec: Annotated[
        Path, typer.Option("--spec", "-s", help="The pipeline spec whose actions to show.")
    ],
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
) -> None:
    """The actions recorded on the pipeline's actions topic (promotions, refusals with
    their reasons, rollbacks), oldest first."""
    settings = _settings()
    try:
        pipeline = load_spec(spec)
        records = commands.history(settings, pipeline, name)
    except StreamscoreError as exc:
        raise _fail(str(exc)) from exc
    if not records:
        about = f" of model {name!r}" if name else ""
        _err().print(f"no actions{about} recorded on {pipeline.actions_topic}", highlight=False)
        return
    title = f"actions on {pipeline.actions_topic}"
    Console(width=max(Console().width, 160)).print(commands.history_table(records, title))


def _specs_using(paths: Sequence[Path], name: str) -> list[PipelineSpec]:
    """The given specs that use model ``name``; given specs of which none does are an error
    (the check asked for could not happen)."""
    try:
        specs = [load_spec(path) for path in paths]
    except StreamscoreError as exc:
        raise _fail(str(exc)) from exc
    using = [spec for spec in specs if layouts_using([spec], name)]
    if specs and not using:
        given = ", ".join(repr(spec.name) for spec in specs)
        msg = f"no spec given uses model {name!r} (specs: {given}); nothing changed"
        raise _fail(msg)
    return using


def _checked_sink(settings: Settings, specs: Sequence[PipelineSpec]) -> commands.ActionSink | None:
    """The sink the action will be recorded in, checked before anything moves (None without
    a spec: nothing to record it on, and the command says so)."""
    if not specs:
        return None
    sink = action_sink(settings)
    try:
        sink.check()
    except StreamscoreError as exc:
        msg = f"nothing changed: the action could not be recorded: {exc}"
        raise _fail(msg) from exc
    return sink


def _record(
    sink: commands.ActionSink | None,
    specs: Sequence[PipelineSpec],
    action: Action,
    name: str,
    alias: str,
    from_version: int | None,
    to_version: int,
    evidence: dict[str, Any] | None,
) -> None:
    if sink is None:
        _err().print(
            f"note: {action} not recorded on any actions topic (pass --spec)", highlight=False
        )
        return
    reasons = evidence.get("reasons", []) if evidence else []
    by = who()
    for spec in specs:
        record = action_record(
            action, pipeline=spec.name, model=name, alias=alias, from_version=from_version,
            to_version=to_version, decided_by=by, evidence=evidence, reasons=reasons,
        )  # fmt: skip
        try:
            sink.publish(spec, [record])
        except StreamscoreError as exc:
            msg = f"the {action} happened but was not recorded on {spec.actions_topic}: {exc}"
            raise _fail(msg) from exc
        _err().print(f"recorded: {action} on {spec.actions_topic}", highlight=False)


def _note_unchecked_columns(layouts: Sequence[Layout]) -> None:
    if not layouts:
        _err().print(
            "note: input columns not checked against a pipeline (pass --spec)", highlight=False
        )


def _rollback_target(registry: ModelRegistry, name: str, alias: str) -> tuple[int, int | None]:
    """(the version before the alias's last change, the version it points at now)."""
    changes = [c for c in registry.alias_history(name) if c.alias == alias]
    current = registry.aliases(name).get(alias)
    if not changes or current is None:
        detail = f"alias {alias!r} has never been set"
        raise ModelNotFound(name, alias, registry.root / name / ALIASES_FILE, detail)
    last = changes[-1]
    if last.previous is None:
        msg = (
            f"alias {alias!r} points at version {current} and has no earlier version"
            f" (set {last.at}, history: {[c.version for c in changes]})"
        )
        raise RegistryError(msg)
    return last.previous, current


@models_app.command()
def unalias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="The alias to remove.")],
) -> None:
    """Remove ALIAS of NAME (not the champion): e.g. the 'challenger', which workers then
    stop shadowing."""
    registry = _registry()
    try:
        was = registry.remove_alias(name, alias)
    except StreamscoreError as exc:
        msg = f"cannot remove {name} {alias!r}: {exc}"
        raise _fail(msg) from exc
    _err().print(f"{name}: {alias} removed (was version {was})", highlight=False)
