"""The training reference profile: bins from the training data, stored beside each version
as JSON, named and hashed in the manifest; versions without one still load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.errors import ModelIntegrityError
from models.manifest import Manifest, ManifestFields
from models.profile import (
    NO_CATEGORY,
    PROFILE_FILE,
    ColumnGroup,
    ProfileBins,
    ReferenceProfile,
    build_profile,
    column_groups,
)
from models.registry import MANIFEST_FILE, ModelRegistry
from models.training import train_models
from tests.unit.test_training import make_frame, make_spec, write_dataset

COLUMNS = ("x", "flag", "c=a", "c=b", "c=z")
GROUPS = [
    ColumnGroup("x", "numeric", ("x",)),
    ColumnGroup("flag", "numeric", ("flag",)),
    ColumnGroup("c", "category", ("c=a", "c=b", "c=z")),
]


def training_matrix(n: int = 5000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = np.zeros((n, len(COLUMNS)), dtype=np.float32)
    matrix[:, 0] = rng.normal(50, 10, n)
    matrix[:, 1] = rng.random(n) < 0.3
    hot = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    matrix[np.arange(n), 2 + hot] = 1
    return matrix


def test_numeric_bins_are_the_training_deciles_with_open_outer_bins() -> None:
    matrix = training_matrix()
    profile = build_profile(COLUMNS, GROUPS, matrix, np.linspace(0, 1, 1000))
    x = profile.columns[0]
    expected = np.quantile(matrix[:, 0].astype(np.float64), np.arange(1, 10) / 10)
    np.testing.assert_allclose(x.edges, expected)
    assert len(x.shares) == 10 and x.shares == pytest.approx([0.1] * 10, abs=0.001)
    # Far outside the training range still falls in a bin: the outer ones are open.
    bins = ProfileBins(profile, COLUMNS)
    far = matrix[:2].copy()
    far[:, 0] = [-1e9, 1e9]
    counts = bins.count(far, np.zeros(0))
    start, end = bins.segments[0]
    assert counts[start:end].tolist() == [1] + [0] * 8 + [1]


def test_a_bool_column_gets_two_bins_and_a_one_hot_group_its_category_frequencies() -> None:
    matrix = training_matrix()
    profile = build_profile(COLUMNS, GROUPS, matrix, np.linspace(0, 1, 1000))
    flag, category = profile.columns[1], profile.columns[2]
    assert flag.edges == [0.0, 1.0]  # deciles 0 and 1, merged: <0 (empty), 0, 1
    assert flag.shares[0] == 0 and flag.shares[2] == pytest.approx(matrix[:, 1].mean())
    assert category.kind == "category" and category.edges == [NO_CATEGORY, "a", "b", "z"]
    frequencies = matrix[:, 2:].mean(axis=0).tolist()
    assert category.shares == pytest.approx([0.0, *frequencies])


def test_the_score_distribution_comes_from_the_held_out_scores() -> None:
    scores = np.random.default_rng(1).beta(1, 8, 2000)
    profile = build_profile(COLUMNS, GROUPS, training_matrix(), scores)
    expected = np.quantile(scores, np.arange(1, 10) / 10)
    np.testing.assert_allclose(profile.score.edges, expected)
    assert profile.score_rows == 2000 and profile.rows == 5000
    assert profile.score.shares == pytest.approx([0.1] * 10, abs=0.001)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 300), st.just(2)),
           elements=st.one_of(st.floats(-1e6, 1e6, width=32), st.integers(-3, 3))),
    arrays(np.float64, st.integers(0, 50), elements=st.floats(0, 1)),
)  # fmt: skip
def test_count_equals_searchsorted_per_column(values: np.ndarray, scores: np.ndarray) -> None:
    """The vectorised count bins as ``np.searchsorted(edges, x, side='right')`` does."""
    train = training_matrix(500)
    profile = build_profile(COLUMNS, GROUPS, train, np.linspace(0, 1, 101))
    batch = train[: len(values)].copy()
    batch[:, :2] = values
    bins = ProfileBins(profile, COLUMNS)
    counts = bins.count(batch, scores)
    for i, column in enumerate(profile.columns[:2]):
        start, end = bins.segments[i]
        index = np.searchsorted(np.asarray(column.edges), batch[:, i], side="right")
        expected = np.bincount(index, minlength=end - start)
        assert counts[start:end].tolist() == expected.tolist(), column.name
    start, end = bins.segments[2]
    codes = np.argmax(batch[:, 2:], axis=1) + 1
    assert counts[start:end].tolist() == np.bincount(codes, minlength=4).tolist()
    start, end = bins.segments[-1]
    index = np.searchsorted(np.asarray(profile.score.edges), scores, side="right")
    assert counts[start:end].tolist() == np.bincount(index, minlength=end - start).tolist()


def test_column_groups_follow_the_specs_model_input(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "classification")
    assert [(g.name, g.kind, g.columns) for g in column_groups(spec)] == [
        ("amount", "numeric", ("amount",)),
        ("channel", "category", ("channel=web", "channel=pos", "channel=atm")),
        ("is_new", "numeric", ("is_new",)),
        ("user_stats__spend_7d", "numeric", ("user_stats__spend_7d",)),
        ("user_stats__txn_count_7d", "numeric", ("user_stats__txn_count_7d",)),
    ]


def test_a_profile_naming_columns_the_layout_lacks_is_refused() -> None:
    profile = build_profile(COLUMNS, GROUPS, training_matrix(100), np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match=r"\['c=z'\] are not model input columns"):
        ProfileBins(profile, COLUMNS[:-1])


# --- stored with each version ---------------------------------------------------------------

_FIELDS = set(ManifestFields.model_fields)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    tmp_path = tmp_path_factory.mktemp("profile")
    spec = make_spec(
        tmp_path, "classification", "\n    - {name: fraud_lr, estimator: logistic_regression}"
    )
    frame = make_frame()
    write_dataset(spec, frame)
    registry = ModelRegistry(tmp_path / "registry")
    train_models(spec, frame, registry, seed=7)
    return registry


def test_train_stores_the_profile_named_and_hashed_in_the_manifest(
    trained: ModelRegistry,
) -> None:
    version = trained.resolve("fraud_lr", "champion")
    ref = version.manifest.reference_profile
    assert ref is not None and ref.file == PROFILE_FILE
    raw = (version.path / PROFILE_FILE).read_bytes()
    assert ref.sha256 == hashlib.sha256(raw).hexdigest()
    json.loads(raw)  # plain JSON data
    manifest = json.loads((version.path / MANIFEST_FILE).read_text())
    assert manifest["reference_profile"] == {"file": PROFILE_FILE, "sha256": ref.sha256}
    profile = version.read_profile()
    assert profile is not None
    assert profile.input_columns == version.manifest.input_columns
    assert [c.name for c in profile.columns] == [
        "amount", "channel", "is_new", "user_stats__spend_7d", "user_stats__txn_count_7d"
    ]  # fmt: skip
    data = version.manifest.training_data
    assert profile.rows == data.train_rows and profile.score_rows == data.holdout_rows
    # Round trip: what was read is what the file says, and it serializes back the same.
    assert ReferenceProfile.model_validate_json(raw) == profile
    assert orjson.dumps(profile.model_dump(mode="json")) == raw


def test_a_changed_profile_is_refused(trained: ModelRegistry, tmp_path: Path) -> None:
    version = trained.resolve("fraud_lr", "champion")
    path = version.path / PROFILE_FILE
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b'"rows":', b'"rows": 1, "x":', 1))
        with pytest.raises(ModelIntegrityError, match="sha256 .* does not match"):
            version.read_profile()
    finally:
        path.write_bytes(original)


def test_a_version_without_a_profile_loads_and_has_none(trained: ModelRegistry) -> None:
    """Manifests written before profiles existed have no 'reference_profile' key."""
    old = trained.resolve("fraud_lr", "champion")
    fields = {k: v for k, v in old.manifest.model_dump().items() if k in _FIELDS}
    again = trained.register("fraud_lr", old.read_onnx(), ManifestFields(**fields))
    assert again.manifest.reference_profile is None and again.read_profile() is None
    manifest = json.loads((again.path / MANIFEST_FILE).read_text())
    del manifest["reference_profile"]
    assert Manifest.model_validate(manifest).reference_profile is None
    assert trained.version("fraud_lr", again.version).read_profile() is None
