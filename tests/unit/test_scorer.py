"""The contract every model kind passes (in the spirit of River's estimator checks).

Each estimator the spec can name is fitted on a small synthetic problem, converted as
training converts it, and served through ``OnnxScorer``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.errors import ModelInputError
from models.estimators import (
    PARITY_TOLERANCE,
    TASK_OF,
    make_estimator,
    parity_gap,
    reference_scores,
    to_onnx_bytes,
)
from models.manifest import ManifestFields, TrainingData
from models.registry import ModelRegistry
from models.scorer import OnnxScorer
from streams.spec import TrainModel

WIDTH = 4
COLUMNS = ("amount", "count", "channel=web", "user__spend_7d")
# Small ensembles keep the suite fast; the contract does not depend on their size.
PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {},
    "gradient_boosting": {"n_estimators": 20, "max_depth": 3},
    "random_forest": {"n_estimators": 15, "max_depth": 5},
    "linear_regression": {},
    "gradient_boosting_regressor": {"n_estimators": 20, "max_depth": 3},
}
KINDS = sorted(PARAMS)


def problem(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH)) * [50.0, 3.0, 0.5, 200.0] + [100.0, 5.0, 0.5, 0.0]
    x[:, 2] = x[:, 2] > 0.5  # a one-hot style 0/1 column
    x = x.astype(np.float32)
    signal = 0.02 * x[:, 0] - 0.3 * x[:, 1] + 1.5 * x[:, 2] + 0.005 * x[:, 3]
    y_class = (signal + rng.normal(size=n) > np.median(signal)).astype(np.float64)
    y_reg = 10.0 * signal + rng.normal(size=n) + 40.0
    return x, y_class, y_reg


@dataclass
class Fitted:
    kind: str
    estimator: Any
    onnx_bytes: bytes
    scorer: OnnxScorer
    test: np.ndarray


def fit(kind: str, seed: int = 0) -> Fitted:
    task = TASK_OF[kind]
    x, y_class, y_reg = problem()
    estimator, _ = make_estimator(TrainModel(name=kind, estimator=kind, params=PARAMS[kind]), seed)
    estimator.fit(x, y_class if task == "classification" else y_reg)
    onnx_bytes = to_onnx_bytes(estimator, WIDTH, task)
    scorer = OnnxScorer(onnx_bytes, name=kind, version=1, input_columns=COLUMNS, task=task)
    return Fitted(kind, estimator, onnx_bytes, scorer, problem(seed=1, n=200)[0])


@pytest.fixture(scope="module", params=KINDS)
def fitted(request: pytest.FixtureRequest) -> Fitted:
    return fit(request.param)


batches = arrays(
    np.float32,
    shape=st.tuples(st.integers(0, 40), st.just(WIDTH)),
    elements=st.floats(-1e4, 1e4, width=32),
)


@settings(max_examples=25, deadline=None)
@given(batch=batches)
def test_score_does_not_mutate_input(fitted: Fitted, batch: np.ndarray) -> None:
    before = batch.copy()
    scores = fitted.scorer.score(batch)
    np.testing.assert_array_equal(batch, before)
    assert scores.dtype == np.float64 and scores.shape == (len(batch),)
    assert np.isfinite(scores).all()
    if TASK_OF[fitted.kind] == "classification":
        assert ((scores >= 0) & (scores <= 1)).all()


def test_other_layouts_are_copied_not_written(fitted: Fitted) -> None:
    fortran = np.asfortranarray(fitted.test[:50])
    as_double = fitted.test[:50].astype(np.float64)
    expected = fitted.scorer.score(fitted.test[:50])
    for batch in (fortran, as_double, fitted.test[:100:2]):
        before = batch.copy()
        scores = fitted.scorer.score(batch)
        np.testing.assert_array_equal(batch, before)
        assert scores.shape == (len(batch),)
    np.testing.assert_array_equal(fitted.scorer.score(fortran), expected)


def test_onnx_equals_sklearn(fitted: Fitted) -> None:
    task = TASK_OF[fitted.kind]
    onnx_scores = fitted.scorer.score(fitted.test)
    reference = reference_scores(fitted.estimator, fitted.test, task)
    assert parity_gap(onnx_scores, reference, task) <= PARITY_TOLERANCE


def test_registry_round_trip_gives_identical_scores(fitted: Fitted, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    fields = ManifestFields(
        training_data=TrainingData(path="synthetic", sha256="0" * 64, rows=300),
        input_columns=COLUMNS,
        task=TASK_OF[fitted.kind],
        metrics={},
        estimator=fitted.kind,
        params=PARAMS[fitted.kind],
    )
    registry.register(fitted.kind, fitted.onnx_bytes, fields)
    loaded = OnnxScorer.from_version(registry.resolve(fitted.kind, "champion"))
    assert (loaded.name, loaded.version, loaded.input_columns) == (fitted.kind, 1, COLUMNS)
    np.testing.assert_array_equal(loaded.score(fitted.test), fitted.scorer.score(fitted.test))


def test_seeded_training_is_deterministic(fitted: Fitted) -> None:
    again = fit(fitted.kind, seed=0)
    np.testing.assert_array_equal(again.scorer.score(fitted.test), fitted.scorer.score(fitted.test))


def test_score_has_no_side_effects(fitted: Fitted) -> None:
    first = fitted.scorer.score(fitted.test)
    second = fitted.scorer.score(fitted.test)
    np.testing.assert_array_equal(first, second)
    # A row's score does not depend on the rest of its micro-batch.
    alone = np.concatenate([fitted.scorer.score(fitted.test[i : i + 1]) for i in range(20)])
    np.testing.assert_allclose(alone, first[:20], rtol=1e-6, atol=1e-7)


def test_wrong_input_width_is_a_clear_error(fitted: Fitted) -> None:
    with pytest.raises(ModelInputError, match=rf"'{fitted.kind}' version 1.*\(n, {WIDTH}\)"):
        fitted.scorer.score(np.zeros((3, WIDTH + 1), dtype=np.float32))
    with pytest.raises(ModelInputError, match="shape \\(4,\\)"):
        fitted.scorer.score(np.zeros(WIDTH, dtype=np.float32))


def test_model_width_must_match_manifest_columns(fitted: Fitted) -> None:
    with pytest.raises(ModelInputError, match="width is 4 but the manifest lists 3"):
        OnnxScorer(
            fitted.onnx_bytes,
            name=fitted.kind,
            version=1,
            input_columns=COLUMNS[:3],
            task=TASK_OF[fitted.kind],
        )


def test_empty_batch_skips_the_session(fitted: Fitted, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoRun:
        def run(self, *args: object) -> None:
            raise AssertionError("session.run called for an empty batch")

    monkeypatch.setattr(fitted.scorer, "_session", NoRun())
    scores = fitted.scorer.score(np.empty((0, WIDTH), dtype=np.float32))
    assert scores.dtype == np.float64 and scores.shape == (0,)


def test_one_run_per_batch(fitted: Fitted, monkeypatch: pytest.MonkeyPatch) -> None:
    session = fitted.scorer._session
    calls: list[int] = []

    class Counting:
        def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
            calls.append(len(next(iter(feeds.values()))))
            return session.run(outputs, feeds)

    monkeypatch.setattr(fitted.scorer, "_session", Counting())
    fitted.scorer.score(fitted.test)
    assert calls == [len(fitted.test)]


def test_require_columns_names_the_first_difference() -> None:
    scorer = fit("logistic_regression").scorer
    scorer.require_columns(list(COLUMNS))
    swapped = [COLUMNS[1], COLUMNS[0], *COLUMNS[2:]]
    with pytest.raises(ModelInputError, match="at position 0"):
        scorer.require_columns(swapped)
    with pytest.raises(ModelInputError, match="at position 3"):
        scorer.require_columns(COLUMNS[:3])


def test_serving_modules_do_not_import_sklearn() -> None:
    code = (
        "import sys, models.registry, models.scorer, models.inputs, models.training_frame;"
        "bad = [m for m in ('sklearn', 'skl2onnx') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
