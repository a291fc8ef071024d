"""The pipeline spec: what one deployment scores, as validated data.

A spec is a YAML file. It names the input topic and event schema, the Feast entity and
features, the ordered model input vector, the primary model, the output topics and the
micro-batch limits. Every stage below reads its part of the spec; nothing in the code knows
the demo domain. Relative paths in a spec are resolved against the spec file's folder.

>>> spec = load_spec_text('''
... name: demo
... input: {topic: events}
... event:
...   id_field: id
...   fields:
...     id: {type: string}
...     user: {type: string}
...     amount: {type: float, min: 0}
... entity: {field: user, join_key: user_id}
... features:
...   repo: repo
...   refs: ["user_stats:spend_7d"]
...   defaults: {"user_stats:spend_7d": 0.0}
... model_input:
...   - event: amount
...   - feature: "user_stats:spend_7d"
... model: {name: spend_lr}
... output: {topic: scores, dead_letter_topic: events-dlq}
... ''', base_dir=Path("/tmp"))
>>> spec.input_columns()
['amount', 'user_stats__spend_7d']
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.manifest import Task
from models.online import OnlineModelSpec
from streams.actions.spec import TASK_METRICS, ActionsSpec
from streams.errors import SpecError
from streams.monitoring.spec import MAX_SLICE_VALUES, MonitoringSpec

FieldType = Literal["string", "int", "float", "bool", "category", "timestamp"]
Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """One field of the input event."""

    type: FieldType
    required: bool = True
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = Field(
        default=None, description="The allowed categories; required for type 'category'."
    )
    default: float | str | bool | None = Field(
        default=None, description="Value an optional field takes when the event lacks it."
    )

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if self.type == "category" and not self.values:
            msg = "a 'category' field needs its allowed 'values'"
            raise ValueError(msg)
        if self.type != "category" and self.values is not None:
            msg = "'values' is only for fields of type 'category'"
            raise ValueError(msg)
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            msg = "'min'/'max' are only for 'int' and 'float' fields"
            raise ValueError(msg)
        if self.min is not None and self.max is not None and self.min > self.max:
            msg = f"min {self.min} is above max {self.max}"
            raise ValueError(msg)
        return self


class InputSpec(_Strict):
    topic: Name
    partitions: int = Field(default=1, ge=1, le=1024)


class EventSpec(_Strict):
    """The input event schema. Fields not declared here are ignored (and not an error)."""

    id_field: str = Field(description="Field holding the event id; keys the prediction.")
    time_field: str | None = Field(
        default=None,
        description="Timestamp field (ISO 8601 or epoch ms); the Kafka timestamp if absent.",
    )
    fields: dict[str, FieldSpec] = Field(min_length=1)


class EntitySpec(_Strict):
    field: str = Field(description="Event field holding the entity key.")
    join_key: str = Field(description="The Feast entity's join key the field maps to.")


class FeaturesSpec(_Strict):
    repo: Path = Field(description="Folder of the Feast feature repo (feature_store.yaml).")
    refs: tuple[str, ...] = Field(
        min_length=1, description="Feature references 'view:feature', read for every event."
    )
    service: str | None = Field(
        default=None,
        description="Optional FeatureService to read through; it must serve exactly 'refs'.",
    )
    defaults: dict[str, float] = Field(
        description="Value used per feature when the online store has none (the entity is"
        " unknown or the value expired). Every ref needs one; such rows are flagged."
    )
    max_age_seconds: float | dict[str, float] | None = Field(
        default=None,
        description="Oldest feature row served, at event time: one number for every view, or"
        " view -> seconds. An older row is treated as missing (defaults, flagged stale).",
    )

    @field_validator("max_age_seconds", mode="before")
    @classmethod
    def _positive_ages(cls, value: Any) -> Any:
        """One line per mistake (a union's two error branches would say it twice)."""
        if value is None:
            return value
        ages = value if isinstance(value, dict) else {"": value}
        for view, age in ages.items():
            where = f"view {view!r}: " if view else ""
            if isinstance(age, bool) or not isinstance(age, int | float):
                msg = f"{where}expected seconds (a number), got {age!r}"
                raise ValueError(msg)
            if not 0 < age < float("inf"):
                msg = f"{where}{age!r} is not a positive number of seconds"
                raise ValueError(msg)
        return value

    @property
    def views(self) -> tuple[str, ...]:
        """The feature views of ``refs``, in order of first appearance."""
        return tuple(dict.fromkeys(ref.partition(":")[0] for ref in self.refs))

    def max_age_by_view(self) -> dict[str, float]:
        """``max_age_seconds`` per view of ``refs``; views without a limit are left out."""
        if self.max_age_seconds is None:
            return {}
        if isinstance(self.max_age_seconds, dict):
            return dict(self.max_age_seconds)
        return dict.fromkeys(self.views, float(self.max_age_seconds))

    @model_validator(mode="after")
    def _check(self) -> FeaturesSpec:
        for ref in self.refs:
            view, _, feature = ref.partition(":")
            if not view or not feature:
                msg = f"feature ref {ref!r} is not of the form 'view:feature'"
                raise ValueError(msg)
        if len(set(self.refs)) != len(self.refs):
            msg = "feature refs are listed twice"
            raise ValueError(msg)
        missing = [r for r in self.refs if r not in self.defaults]
        if missing:
            msg = f"no default value for features {missing}"
            raise ValueError(msg)
        extra = [r for r in self.defaults if r not in self.refs]
        if extra:
            msg = f"defaults given for features not in refs: {extra}"
            raise ValueError(msg)
        if isinstance(self.max_age_seconds, dict):
            unknown = [v for v in self.max_age_seconds if v not in self.views]
            if unknown:
                msg = (
                    f"max_age_seconds: unknown feature views {unknown}; the views of"
                    f" features.refs are {list(self.views)}"
                )
                raise ValueError(msg)
        return self


class InputColumn(_Strict):
    """One entry of the ordered model input vector: an event field or a feature."""

    event: str | None = None
    feature: str | None = None
    encode: Literal["numeric", "one_hot"] = "numeric"

    @model_validator(mode="after")
    def _check(self) -> InputColumn:
        if (self.event is None) == (self.feature is None):
            msg = "give exactly one of 'event' or 'feature'"
            raise ValueError(msg)
        if self.feature is not None and self.encode != "numeric":
            msg = "features are numeric; 'one_hot' is for category event fields"
            raise ValueError(msg)
        return self


def _version_text(version: Any) -> Any:
    """``version: 7`` (a YAML int) means version 7, as ``version: "7"`` does."""
    if isinstance(version, int) and not isinstance(version, bool):
        if version < 1:
            msg = f"version numbers start at 1, got {version}"
            raise ValueError(msg)
        return str(version)
    return version


class CanarySpec(_Strict):
    """Another version of the primary's model serving a share of the entity keys (chosen by
    a hash of the key, so one key always meets the same model on every worker)."""

    version: str = Field(
        default="canary",
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
        description="The registry alias of the canary's version (not a number: a rollback"
        " removes the alias; `streamscore models promote NAME V --alias canary` sets it);"
        " while it is not set, the primary serves every key.",
    )
    share: float = Field(
        gt=0.0,
        le=0.5,
        description="Share of entity keys the canary serves (at most half: a canary that"
        " serves more is a promotion).",
    )


class ModelRef(_Strict):
    name: Name
    version: str = Field(
        default="champion", description="A version number or an alias (e.g. 'champion')."
    )
    _version_number = field_validator("version", mode="before")(_version_text)
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Decision threshold on the score; predictions carry 'decision' if set.",
    )
    follow_challenger: bool = Field(
        default=True,
        description="While the model has a 'challenger' alias (`streamscore train"
        " --from-stream` sets it), scoring workers score that version in shadow, as"
        " '<name>@challenger', and the label join evaluates it; false: never.",
    )
    canary: CanarySpec | None = None

    @property
    def decision_threshold(self) -> float:
        """The threshold evaluations decide at: ``threshold``, or 0.5 when it is unset."""
        return self.threshold if self.threshold is not None else 0.5

    @model_validator(mode="after")
    def _canary_differs(self) -> ModelRef:
        if self.canary is not None and self.canary.version == self.version:
            msg = f"canary.version {self.canary.version!r} is the primary's own version"
            raise ValueError(msg)
        return self


class OutputSpec(_Strict):
    topic: Name
    dead_letter_topic: Name
    shadow_topic: Name | None = Field(
        default=None, description="Shadow predictions; defaults to '<topic>-shadow'."
    )
    partitions: int | None = Field(
        default=None, ge=1, le=1024, description="Defaults to the input topic's partitions."
    )


class BatchSpec(_Strict):
    max_size: int = Field(
        default=1024,
        ge=1,
        le=65536,
        description=(
            "Most events in one batch. Under light load batches close on max_wait_ms and stay"
            " small; under a backlog they fill, and a batch's fixed costs (broker and Redis"
            " round trips) are then shared by more events."
        ),
    )
    max_wait_ms: float = Field(
        default=5.0,
        gt=0,
        le=10_000,
        description="Longest a batch waits to fill: the latency batching may add.",
    )
    in_flight: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Batches a worker processes at once: the next batch fills and starts while earlier"
            " ones wait on Redis and Kafka. Inputs are acked in batch order, each batch once"
            " all its outputs are delivered. More than 1 pays off when round trips dominate"
            " (a remote broker); with everything on 2 local cores it made batches smaller and"
            " cost more CPU than it saved (measured), hence 1."
        ),
    )
    shadow_queue_batches: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="Batches a shadow may fall behind before it sheds (skips) new ones.",
    )


class ShadowRef(_Strict):
    """A registry model scored in shadow on the primary's exact feature vectors."""

    name: Name
    version: str = "champion"
    _version_number = field_validator("version", mode="before")(_version_text)


class LabelsSpec(_Strict):
    """Delayed ground truth: ``{"event_id", "label", "label_time"}`` records on ``topic``."""

    topic: Name
    partitions: int = Field(default=1, ge=1, le=1024)
    window_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How long a prediction waits for its label; later labels are 'late'.",
    )
    late_policy: Literal["drop", "learn"] = Field(
        default="drop", description="Whether a late label (still joinable) is learned."
    )
    orphan_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="How long a label that finds no prediction is tried again before it"
        " counts as an orphan: a label can outrun its event's prediction (labels sent at"
        " once, a scoring worker behind). 0: an orphan at once.",
    )
    keep_labelled: bool = Field(
        default=True,
        description="Append every joined label, with the exact vector and scores it was"
        " served, to the labelled topic (one record per label batch): what `streamscore"
        " train --from-stream` trains on.",
    )
    labelled_topic: Name | None = Field(
        default=None, description="The labelled topic; '<pipeline>-labelled' when absent."
    )


class PrivacySpec(_Strict):
    """Event fields whose values must not leave the pipeline as they came in.

    ``hash`` replaces a value with its keyed HMAC-SHA256 (hex; the key is the
    ``STREAMSCORE_PRIVACY_HASH_KEY`` setting) wherever records carry it: the event id (the
    prediction's Kafka key, its Redis keys; labels are hashed the same way, so they still
    join) and the entity key. ``drop`` leaves it out. Either way the value is never quoted
    in a dead letter's ``error``. ``dead_letter_originals`` says whether dead letters keep
    the original message bytes, which hold every value as it came.
    """

    hash: tuple[str, ...] = Field(
        default=(), description="Event fields replaced by their keyed HMAC-SHA256 (hex)."
    )
    drop: tuple[str, ...] = Field(default=(), description="Event fields left out of records.")
    dead_letter_originals: Literal["keep", "drop"] = Field(
        default="keep",
        description="'keep' (the default, as without privacy) keeps the original key and"
        " value in dead letters, raw: they hold the hashed and dropped values too. 'drop'"
        " leaves them out (and the dead letter unkeyed); such dead letters cannot be"
        " replayed.",
    )

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field whose value is withheld (hashed or dropped)."""
        return self.hash + self.drop


class SloSpec(_Strict):
    """The service levels the alerts hold this pipeline to.

    ``streamscore monitoring rules --spec S`` renders them into the Prometheus rules
    (monitoring/prometheus/rules/streamscore.yml). The defaults sit well clear of what the
    demo's own traffic measures (p99 ~50-150 ms on 2 shared cores, 1% bad events sent on
    purpose), so an alert means something changed.
    """

    end_to_end_p99_seconds: float = Field(
        default=0.5,
        gt=0,
        le=3600,
        description="Most the p99 of event-to-prediction latency may be (over 5 minutes).",
    )
    dead_letter_ratio: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Most of the input events that may be dead-lettered (over 5 minutes);"
        " invalid labels are not input events and do not count.",
    )
    label_coverage_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Least share of predictions whose label window closed that must have"
        " got their label (over 30 minutes); only for a spec with 'labels'.",
    )


Estimator = Literal[
    "logistic_regression",
    "gradient_boosting",
    "random_forest",
    "linear_regression",
    "gradient_boosting_regressor",
]
#: What each offline estimator learns (checked against the pipeline's task at spec load).
ESTIMATOR_TASK: dict[str, Task] = {
    "logistic_regression": "classification",
    "gradient_boosting": "classification",
    "random_forest": "classification",
    "linear_regression": "regression",
    "gradient_boosting_regressor": "regression",
}


class TrainModel(_Strict):
    name: Name
    estimator: Estimator
    params: dict[str, Any] = Field(default_factory=dict)


class TrainingSpec(_Strict):
    """Offline training data: labelled events with the event fields, time and entity key."""

    dataset: Path = Field(description="Parquet file of historical labelled events.")
    label: str = Field(description="Column of the dataset holding the label.")
    task: Task = Field(
        default="classification",
        description="Filled in from the pipeline's 'task' when absent; must agree with it.",
    )
    models: tuple[TrainModel, ...] = Field(min_length=1)
    min_stream_rows: int = Field(
        default=200,
        ge=10,
        description="Fewest distinct labelled rows `streamscore train --from-stream` trains"
        " on (a fifth, the latest, is held out); fewer: it refuses.",
    )


class PipelineSpec(_Strict):
    name: Name = Field(description="Stable pipeline name: Faust app id and consumer group.")
    task: Task = Field(
        default="classification",
        description="What the models predict: 'classification' (a score is the positive"
        " class's probability; labels are 0/1/true/false) or 'regression' (a score is the"
        " predicted value; labels are finite numbers). Absent, it is training.task, else"
        " classification.",
    )
    input: InputSpec
    event: EventSpec
    entity: EntitySpec
    features: FeaturesSpec
    model_input: tuple[InputColumn, ...] = Field(min_length=1)
    model: ModelRef
    output: OutputSpec
    batch: BatchSpec = BatchSpec()
    shadows: tuple[ShadowRef, ...] = ()
    online: OnlineModelSpec | None = Field(
        default=None, description="A River model that learns from labels and scores in shadow."
    )
    labels: LabelsSpec | None = None
    training: TrainingSpec | None = None
    privacy: PrivacySpec | None = Field(
        default=None, description="Event fields hashed or dropped in every output."
    )
    slo: SloSpec = Field(
        default=SloSpec(), description="Alert thresholds: latency, dead letters, labels."
    )
    monitoring: MonitoringSpec = Field(
        default=MonitoringSpec(),
        description="Drift against the primary's training reference: window, thresholds,"
        " topic (streams/monitoring/spec.py).",
    )
    generator: str | None = Field(
        default=None,
        description="Optional 'module:callable' making synthetic events for the producer;"
        " events are drawn from the schema when absent.",
    )
    actions: ActionsSpec = Field(
        default=ActionsSpec(),
        description="Guarded promotion (streams/actions/spec.py): evidence, metric, margin,"
        " guards; the actions topic.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_task(cls, raw: Any) -> Any:
        """One task per pipeline, said once: ``task`` or ``training.task`` (either fills in
        the other); both, they must agree."""
        if not isinstance(raw, dict):
            return raw
        training = raw.get("training")
        trained = training.get("task") if isinstance(training, dict) else None
        task = raw.get("task")
        if task is not None and trained is not None and task != trained:
            msg = f"task is {task!r} but training.task is {trained!r}: a pipeline has one task"
            raise ValueError(msg)
        if task is None and trained is not None:
            return {**raw, "task": trained}
        if task is not None and isinstance(training, dict) and trained is None:
            return {**raw, "training": {**training, "task": task}}
        return raw

    @model_validator(mode="after")
    def _check_task(self) -> PipelineSpec:
        if self.task == "regression" and self.model.threshold is not None:
            msg = (
                "model.threshold: a regression model's score is the predicted value, not a"
                " probability; a decision threshold is for classification only"
            )
            raise ValueError(msg)
        if self.online is not None and self.online.task != self.task:
            kinds = ", ".join(self.online.kinds_for(self.task))
            msg = (
                f"online.model: {self.online.model!r} is a {self.online.task} model but the"
                f" pipeline's task is {self.task}; use {kinds}"
            )
            raise ValueError(msg)
        for i, entry in enumerate(self.training.models if self.training else ()):
            if ESTIMATOR_TASK[entry.estimator] != self.task:
                msg = (
                    f"training.models[{i}].estimator: {entry.estimator!r} is a"
                    f" {ESTIMATOR_TASK[entry.estimator]} estimator but the pipeline's task"
                    f" is {self.task}"
                )
                raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        fields = self.event.fields
        _require_field(fields, self.event.id_field, "event.id_field", ("string", "int"))
        if self.event.time_field is not None:
            _require_field(fields, self.event.time_field, "event.time_field", ("timestamp",))
        _require_field(fields, self.entity.field, "entity.field", ("string", "int"))
        for i, column in enumerate(self.model_input):
            where = f"model_input[{i}]"
            if column.event is not None:
                allowed = ("category",) if column.encode == "one_hot" else ("int", "float", "bool")
                _require_field(fields, column.event, f"{where}.event", allowed)
                declared = fields[column.event]
                if not declared.required and declared.default is None:
                    msg = f"{where}.event {column.event!r} is optional: give it a 'default'"
                    raise ValueError(msg)
            elif column.feature not in self.features.refs:
                msg_0 = f"{where}.feature {column.feature!r} is not in features.refs"
                raise ValueError(msg_0)
        return self

    @model_validator(mode="after")
    def _check_models(self) -> PipelineSpec:
        names = [self.model.name, *(s.name for s in self.shadows)]
        if self.online is not None:
            names.append(self.online.name)
            if self.labels is None:
                msg = "online: an online model learns from labels; declare 'labels'"
                raise ValueError(msg)
        if len(set(names)) != len(names):
            msg = f"model, shadows and online need distinct names, got {names}"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _check_privacy(self) -> PipelineSpec:
        if self.privacy is None:
            return self
        model_fields = {column.event for column in self.model_input if column.event}
        seen: set[str] = set()
        for kind in ("hash", "drop"):
            for name in getattr(self.privacy, kind):
                where = f"privacy.{kind}: {name!r}"
                if name not in self.event.fields:
                    msg = f"{where} is not a field of event.fields"
                    raise ValueError(msg)
                if name in seen:
                    msg = f"{where} is listed twice (a field is hashed or dropped, not both)"
                    raise ValueError(msg)
                seen.add(name)
                if name in model_fields:
                    msg = (
                        f"{where} is a model input: the prediction store keeps the exact"
                        " vector the model scored, for the label join"
                    )
                    raise ValueError(msg)
                if name == self.event.time_field:
                    msg = f"{where} is event.time_field: every record carries the event time"
                    raise ValueError(msg)
        if self.event.id_field in self.privacy.drop:
            msg = (
                f"privacy.drop: {self.event.id_field!r} is event.id_field: it keys every"
                " prediction and joins its label; hash it instead"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _check_skew(self) -> PipelineSpec:
        """The skew check runs in the learner (labels) and asks the offline store with the
        entity key the prediction store keeps, which privacy must leave as it came."""
        if not self.monitoring.skew.enabled:
            return self
        where = "monitoring.skew.sample_rate"
        if self.labels is None:
            msg = f"{where}: the skew check runs on labelled predictions; declare 'labels'"
            raise ValueError(msg)
        withheld = self.privacy.fields if self.privacy is not None else ()
        if self.entity.field in withheld:
            msg = (
                f"{where}: entity.field {self.entity.field!r} is in privacy.hash/drop, but"
                " the check keeps it in the prediction store to ask the offline store with"
                " it; turn the check off (0) or keep the entity key"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _check_slices(self) -> PipelineSpec:
        """Slices are metric labels: bounded, declared values only, none the spec withholds."""
        withheld = set(self.privacy.fields) if self.privacy is not None else set()
        seen: set[str] = set()
        for name in self.monitoring.slices:
            where = f"monitoring.slices: {name!r}"
            if name in seen:
                msg = f"{where} is listed twice"
                raise ValueError(msg)
            seen.add(name)
            _require_field(self.event.fields, name, "monitoring.slices", ("category", "bool"))
            declared = self.event.fields[name].values or ()
            if len(declared) > MAX_SLICE_VALUES:
                msg = (
                    f"{where} declares {len(declared)} categories, more than"
                    f" {MAX_SLICE_VALUES}: each is a series of every slice metric, per model;"
                    " slice on a coarser field"
                )
                raise ValueError(msg)
            if name in withheld:
                msg = f"{where} is listed in privacy: its values would be metric labels"
                raise ValueError(msg)
        return self

    @property
    def shadow_topic(self) -> str:
        return self.output.shadow_topic or f"{self.output.topic}-shadow"

    @property
    def monitoring_topic(self) -> str:
        return self.monitoring.topic or f"{self.name}-monitoring"

    @property
    def output_partitions(self) -> int:
        return self.output.partitions or self.input.partitions

    @property
    def labelled_topic(self) -> str | None:
        """Where joined labels are kept for training (None: labels not kept)."""
        if self.labels is None or not self.labels.keep_labelled:
            return None
        return self.labels.labelled_topic or f"{self.name}-labelled"

    @property
    def challenger_shadow(self) -> str | None:
        """The shadow name of the primary's 'challenger' version (None: not followed)."""
        return f"{self.model.name}@challenger" if self.model.follow_challenger else None

    def input_columns(self) -> list[str]:
        """Names of the model input vector's columns, in order (one per one-hot category)."""
        names: list[str] = []
        for column in self.model_input:
            if column.feature is not None:
                names.append(feature_column(column.feature))
            elif column.encode == "one_hot":
                values = self.event.fields[column.event or ""].values or ()
                names.extend(f"{column.event}={value}" for value in values)
            else:
                names.append(column.event or "")
        return names

    @property
    def actions_topic(self) -> str:
        return self.actions.topic or f"{self.name}-actions"

    @model_validator(mode="after")
    def _check_actions(self) -> PipelineSpec:
        self._check_task_metric("actions.promote.metric", self.actions.promote.metric)
        self._check_task_metric("actions.guard.metric", self.actions.guard.metric)
        self._check_controller()
        return self

    def _check_task_metric(self, where: str, metric: str | None) -> None:
        if metric is not None and metric not in TASK_METRICS[self.task]:
            choices = ", ".join(TASK_METRICS[self.task])
            msg = f"{where}: {metric!r} is not a {self.task} metric; use {choices}"
            raise ValueError(msg)

    def _check_controller(self) -> None:
        """What `streamscore controller` needs: a labelled topic and an estimator to retrain,
        a floor metric of the task, and for ``promote.auto`` a followed champion alias and
        a shadowed challenger (its evidence)."""
        retrain = self.actions.retrain
        if retrain.enabled and (self.labelled_topic is None or self.training is None):
            msg = (
                "actions.retrain: retraining from the stream needs 'labels' with"
                " keep_labelled: true and a 'training' section (the estimator to fit)"
            )
            raise ValueError(msg)
        floor = retrain.metric_floor
        if floor is not None:
            self._check_task_metric("actions.retrain.metric_floor.metric", floor.metric)
        if self.actions.promote.auto and (
            self.model.version != "champion" or not self.model.follow_challenger
        ):
            msg = (
                "actions.promote.auto: the controller moves the 'champion' alias on the"
                " challenger shadow's evidence: it needs model.version: champion (got"
                f" {self.model.version!r}) and model.follow_challenger: true"
            )
            raise ValueError(msg)


def feature_column(ref: str) -> str:
    """The column name Feast uses for a ref with ``full_feature_names``: 'view__feature'."""
    return ref.replace(":", "__", 1)


def _require_field(
    fields: dict[str, FieldSpec], name: str, where: str, types: tuple[str, ...]
) -> None:
    if name not in fields:
        msg = f"{where} {name!r} is not a field of event.fields"
        raise ValueError(msg)
    if fields[name].type not in types:
        msg = f"{where} {name!r} has type {fields[name].type!r}; expected one of {list(types)}"
        raise ValueError(msg)


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a spec file; raises SpecError naming the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read pipeline spec {path}: {exc.strerror}"
        raise SpecError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = (
            f"pipeline spec {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at"
            f" offset {exc.start}): save it as UTF-8"
        )
        raise SpecError(msg) from exc
    return load_spec_text(text, base_dir=path.resolve().parent, source=str(path))


def load_spec_text(text: str, base_dir: Path, source: str = "<spec>") -> PipelineSpec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{source}: not valid YAML: {exc}"
        raise SpecError(msg) from exc
    if not isinstance(raw, dict):
        msg = f"{source}: a pipeline spec is a YAML mapping, got {type(raw).__name__}"
        raise SpecError(msg)
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        error = SpecError(_describe(source, exc))
        error.refs_without_default, error.feature_repo = _refs_without_default(raw, base_dir)
        raise error from exc
    return _resolve_paths(spec, base_dir)


def _refs_without_default(
    raw: dict[str, Any], base_dir: Path
) -> tuple[tuple[str, ...], Path | None]:
    """The refs of an invalid spec that have no default (often a misspelled ref, which the
    CLI then looks up in the Feast repo), and the repo folder."""
    features = raw.get("features")
    if not isinstance(features, dict):
        return (), None
    refs, defaults, repo = features.get("refs"), features.get("defaults"), features.get("repo")
    if not isinstance(refs, list) or not isinstance(defaults, dict):
        return (), None
    missing = tuple(str(r) for r in refs if r not in defaults)
    return missing, base_dir / str(repo) if isinstance(repo, str) else None


def _resolve_paths(spec: PipelineSpec, base_dir: Path) -> PipelineSpec:
    features = spec.features.model_copy(update={"repo": base_dir / spec.features.repo})
    update: dict[str, Any] = {"features": features}
    if spec.training is not None:
        dataset = base_dir / spec.training.dataset
        update["training"] = spec.training.model_copy(update={"dataset": dataset})
    return spec.model_copy(update=update)


def _describe(source: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return f"{source}: invalid pipeline spec: {'; '.join(problems)}"
