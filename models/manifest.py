"""What the registry records about one model version, as validated data.

A manifest answers, months later, "what is this model and can I trust it?": which data it
was trained on (path, sha256, rows), the exact input columns in order, the task, the offline
metrics, the estimator and its parameters, the sha256 of the ONNX file it describes, and
the file and sha256 of its reference profile (``models/profile.py``; versions registered
before profiles existed have none, and are served without drift monitoring).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["classification", "regression"]
Label = bool | int | float | str
_SHA256 = r"^[0-9a-f]{64}$"


class TrainingData(BaseModel):
    """The dataset a version was fitted on; the sha256 tells whether it has changed since."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str = Field(pattern=_SHA256)
    rows: int = Field(ge=0, description="Rows of the training frame (train + holdout).")
    train_rows: int | None = Field(default=None, ge=0)
    holdout_rows: int | None = Field(default=None, ge=0)


class StreamLineage(BaseModel):
    """Where a version trained from the stream (``streamscore train --from-stream``) got
    its rows: the labelled topic's records it read, enough to read the same rows again and
    check them against ``sha256``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    offsets: dict[int, tuple[int, int]] = Field(
        description="Partition -> [first, last] offset of the records read (inclusive)."
    )
    rows: int = Field(ge=0, description="Distinct labelled rows (train + held-out tail).")
    sha256: str = Field(
        pattern=_SHA256,
        description="Of the frame's canonical bytes (streams/learning/labelled_frame.py).",
    )
    since: str | None = Field(
        default=None, description="The --since cut (records written from then on), UTC."
    )
    first_predicted_at: str = Field(description="The oldest row's prediction time, UTC.")
    last_predicted_at: str = Field(description="The newest row's prediction time, UTC.")
    holdout_from: str = Field(
        description="The held-out tail: the rows predicted from this time on, UTC."
    )
    train_rows: int = Field(ge=0)
    holdout_rows: int = Field(ge=0)
    duplicate_rows: int = Field(default=0, ge=0, description="Repeated event ids, dropped.")
    skipped_rows: int = Field(
        default=0, ge=0, description="Rows of another input layout or pipeline, left out."
    )
    unreadable_records: int = Field(default=0, ge=0)
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Offline metrics on the held-out tail."
    )


class ManifestFields(BaseModel):
    """The part of a manifest the caller of ``ModelRegistry.register`` provides.

    Extra keys are refused here so a typo in a trainer fails at registration, not later.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    training_data: TrainingData
    input_columns: tuple[str, ...] = Field(
        min_length=1, description="InputLayout column names, in model input order."
    )
    task: Task
    metrics: dict[str, float] = Field(description="Offline metrics on the holdout.")
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    classes: tuple[Label, ...] | None = Field(
        default=None,
        description="Classification labels in probability-column order; the positive class"
        " (the one scored) is the last.",
    )
    seed: int | None = None
    pipeline: str | None = Field(default=None, description="Name of the spec trained from.")
    feature_refs: tuple[str, ...] = ()
    libraries: dict[str, str] = Field(
        default_factory=dict, description="Versions of the libraries that built the artifact."
    )
    lineage: StreamLineage | None = Field(
        default=None, description="Trained from the labelled stream: the records it read."
    )

    @model_validator(mode="after")
    def _check(self) -> ManifestFields:
        if len(set(self.input_columns)) != len(self.input_columns):
            msg = "input_columns lists a column twice"
            raise ValueError(msg)
        if self.task == "classification" and self.classes is not None and len(self.classes) != 2:
            msg = f"a binary classifier needs 2 classes, got {list(self.classes)}"
            raise ValueError(msg)
        if self.task == "regression" and self.classes is not None:
            msg = "'classes' is only for classification"
            raise ValueError(msg)
        return self


class ArtifactRef(BaseModel):
    """A file of the version folder beside the model, and its sha256."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    sha256: str = Field(pattern=_SHA256)


class Manifest(ManifestFields):
    """A full manifest: the caller's fields plus what the registry assigns.

    Unknown keys are ignored when reading so a worker can load manifests written by a newer
    trainer that records more.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: Literal[1] = 1
    name: str
    version: int = Field(ge=1)
    created: str = Field(description="UTC time of registration, ISO 8601.")
    onnx_sha256: str = Field(pattern=_SHA256)
    reference_profile: ArtifactRef | None = Field(
        default=None, description="The training reference profile (None: trained before)."
    )
