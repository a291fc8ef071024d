"""A pipeline's task, said once (``task`` or ``training.task``), and what must agree with it:
a regression pipeline has no decision threshold, its online model is a regressor, its
offline estimators are regressors; and the reverse for classification. Each mismatch is one
line naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.errors import SpecError
from streams.spec import PipelineSpec, load_spec, load_spec_text
from tests.unit.test_spec import BASE

ETA = Path(__file__).resolve().parents[1] / "specs" / "eta" / "spec.yaml"
TRAINING = {"dataset": "d.parquet", "label": "y", "models": [{"name": "m", "estimator": "X"}]}


def spec(**changes: Any) -> PipelineSpec:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["model"] = {"name": "m"}
    doc.update(changes)
    return load_spec_text(yaml.safe_dump(doc), base_dir=Path("/tmp"))


def error(**changes: Any) -> str:
    with pytest.raises(SpecError) as caught:
        spec(**changes)
    text = str(caught.value)
    assert "\n" not in text
    return text


def training(task: str | None, estimator: str) -> dict[str, Any]:
    section = {**TRAINING, "models": [{"name": "m", "estimator": estimator}]}
    return section if task is None else {**section, "task": task}


def test_the_task_defaults_to_classification_and_is_said_once() -> None:
    assert spec().task == "classification"
    assert spec(task="regression").task == "regression"
    assert load_spec(ETA).task == "regression"  # from training.task alone
    filled = spec(task="regression", training=training(None, "linear_regression"))
    assert filled.training is not None and filled.training.task == "regression"
    both = spec(task="regression", training=training("regression", "linear_regression"))
    assert both.task == "regression"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"task": "regression", "training": training("classification", "logistic_regression")},
            "task is 'regression' but training.task is 'classification': a pipeline has one task",
        ),
        (
            {"task": "regression", "model": {"name": "m", "threshold": 0.5}},
            "model.threshold: a regression model's score is the predicted value, not a"
            " probability; a decision threshold is for classification only",
        ),
        (
            {
                "task": "regression",
                "online": {"name": "r", "model": "logistic_regression"},
                "labels": {"topic": "labels"},
            },
            "online.model: 'logistic_regression' is a classification model but the pipeline's"
            " task is regression; use linear_regression",
        ),
        (
            {"online": {"name": "r", "model": "linear_regression"}, "labels": {"topic": "l"}},
            "online.model: 'linear_regression' is a regression model but the pipeline's task"
            " is classification; use logistic_regression, hoeffding_tree",
        ),
        (
            {"training": training("regression", "random_forest")},
            "training.models[0].estimator: 'random_forest' is a classification estimator but"
            " the pipeline's task is regression",
        ),
        (
            {"task": "regression", "training": training(None, "gradient_boosting")},
            "training.models[0].estimator: 'gradient_boosting' is a classification estimator",
        ),
        ({"task": "ranking"}, "task: Input should be 'classification' or 'regression'"),
    ],
)
def test_mismatches_are_one_line_naming_the_field(changes: dict[str, Any], expected: str) -> None:
    assert expected in error(**changes)


def test_a_regression_pipeline_with_labels_and_an_online_regressor_loads() -> None:
    loaded = spec(
        task="regression",
        online={"name": "r", "model": "linear_regression", "params": {"l2": 0.01}},
        labels={"topic": "labels"},
    )
    assert loaded.online is not None and loaded.online.task == "regression"
