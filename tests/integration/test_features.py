"""The features stage on a real Redis: open/apply/materialize the demo repo, then read.

The repo is copied to a temp folder (the source tree is never written) and opened under a
unique project name, so these rows never meet another test's in the shared Redis. The
reference for every value is Feast's own ``get_online_features(full_feature_names=True)``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from feast import FeatureStore, FeatureView, Field, FileSource
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.types import Float32

from features.card_fraud.synthetic import card_id, write_offline_data
from features.errors import FeatureStoreError
from features.freshness import FreshnessPolicy
from features.reader import OnlineFeatureReader
from features.store import apply_repo, materialize, open_store, redis_connection_string
from streams.runtime.connections import RedisConnection
from streams.runtime.embedded import free_port
from streams.spec import PipelineSpec, feature_column, load_spec
from tests.integration.harness import write_card_stats

pytestmark = pytest.mark.integration

SOURCE_REPO = Path(__file__).resolve().parents[2] / "features" / "card_fraud"
SPEC = Path(__file__).resolve().parents[2] / "streams" / "specs" / "card_fraud.yaml"
N_CARDS = 40
KNOWN = [card_id(i) for i in range(N_CARDS)]


def copy_repo(target: Path) -> Path:
    shutil.copytree(SOURCE_REPO, target, ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_offline_data(target, n_cards=N_CARDS, n_history=50, seed=3)
    return target


def project() -> str:
    return f"card_fraud_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("features") / "card_fraud")


@pytest.fixture(scope="module")
def store_project(repo: Path, redis_url: str) -> str:
    """Apply and materialize once per module, run from a CWD that is not the repo."""
    name = project()
    cwd, path, env = os.getcwd(), list(sys.path), dict(os.environ)
    store = open_store(repo, RedisConnection(redis_url), project=name)
    apply_repo(store, repo)
    materialize(store)
    assert (os.getcwd(), sys.path, dict(os.environ)) == (cwd, path, env)
    return name


@pytest.fixture
def store(repo: Path, redis_url: str, store_project: str) -> FeatureStore:
    return open_store(repo, RedisConnection(redis_url), project=store_project)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(SPEC)


def expected(store: FeatureStore, spec: PipelineSpec, keys: list[str]) -> dict[str, Any]:
    refs = list(spec.features.refs)
    return store.get_online_features(refs, {"card_id": keys}, full_feature_names=True).to_dict()


def assert_matches_feast(batch: Any, reference: dict[str, Any], spec: PipelineSpec) -> None:
    for j, ref in enumerate(spec.features.refs):
        column = reference[feature_column(ref)]
        default = spec.features.defaults[ref]
        want = np.array([default if v is None else v for v in column], dtype=np.float64)
        np.testing.assert_array_equal(batch.values[:, j], want, err_msg=ref)
        np.testing.assert_array_equal(batch.defaulted[:, j], [v is None for v in column])


def test_reader_equals_get_online_features(store: FeatureStore, spec: PipelineSpec) -> None:
    keys = [KNOWN[5], "card-new-00000001", KNOWN[0], KNOWN[5], KNOWN[39]]
    batch = OnlineFeatureReader(store, spec).read(keys)

    assert batch.values.shape == (5, len(spec.features.refs)) and batch.values.dtype == np.float64
    assert_matches_feast(batch, expected(store, spec, keys), spec)
    assert batch.entity_found.tolist() == [True, False, True, True, True]


def feast_event_times(store: FeatureStore, spec: PipelineSpec, keys: list[str]) -> list[float]:
    """The event timestamp Feast gives each key's row (0 where it has none)."""
    refs = list(spec.features.refs)
    proto = store.get_online_features(refs, {"card_id": keys}, full_feature_names=True).proto
    column = list(proto.metadata.feature_names.val).index(feature_column(refs[0]))
    return [t.seconds + t.nanos * 1e-9 for t in proto.results[column].event_timestamps]


def test_reader_gives_each_rows_event_timestamp_as_feast_does(
    store: FeatureStore, spec: PipelineSpec
) -> None:
    keys = [KNOWN[2], "nobody", KNOWN[9], KNOWN[2]]
    batch = OnlineFeatureReader(store, spec).read(keys)
    want = feast_event_times(store, spec, keys)

    assert batch.timestamps.shape == (4, 1)  # one view
    assert batch.timestamps[[0, 2, 3], 0].tolist() == pytest.approx([want[0], want[2], want[3]])
    assert np.isnan(batch.timestamps[1, 0])  # no row: no time (Feast says the epoch)
    assert want[1] == 0 and want[0] > time.time() - 86_400  # the latest daily snapshot


def test_feast_serves_a_row_older_than_its_views_ttl_and_the_policy_defaults_it(
    store: FeatureStore, spec: PipelineSpec
) -> None:
    ttl = store.get_feature_view("card_stats").ttl
    assert ttl is not None
    old = datetime.now(UTC) - ttl - timedelta(hours=1)
    card = f"card-old-{uuid.uuid4().hex[:8]}"
    write_card_stats(store, {card: 123.0}, at=old)

    # Feast 0.67 does not apply the view's ttl on an online read: the row is served, PRESENT.
    response = store.get_online_features(
        list(spec.features.refs), {"card_id": [card]}, full_feature_names=True
    )
    assert response.to_dict()["card_stats__avg_amount_30d"] == [123.0]
    assert {r.statuses[0] for r in response.proto.results} == {FieldStatus.PRESENT}

    batch = OnlineFeatureReader(store, spec).read([card, KNOWN[0]])
    assert batch.timestamps[0, 0] == pytest.approx(old.timestamp(), abs=1e-3)
    assert batch.values[0, 1] == 123.0 and not batch.defaulted.any()
    limited = spec.features.model_copy(update={"max_age_seconds": ttl.total_seconds()})
    served = FreshnessPolicy(limited).apply(batch, np.full(2, time.time()))
    assert served.stale[:, 0].tolist() == [True, False]
    assert served.values[0].tolist() == [spec.features.defaults[r] for r in spec.features.refs]
    np.testing.assert_array_equal(served.values[1], batch.values[1])
    assert served.ages[0, 0] == pytest.approx(ttl.total_seconds() + 3600, abs=60)


def test_every_known_card_is_found_with_no_default(store: FeatureStore, spec: PipelineSpec) -> None:
    batch = OnlineFeatureReader(store, spec).read(KNOWN)

    assert batch.entity_found.all() and not batch.defaulted.any()
    assert_matches_feast(batch, expected(store, spec, KNOWN), spec)


def test_unknown_keys_get_the_defaults_and_are_flagged(
    store: FeatureStore, spec: PipelineSpec
) -> None:
    batch = OnlineFeatureReader(store, spec).read(["nobody", "card-new-1"])

    defaults = [spec.features.defaults[r] for r in spec.features.refs]
    np.testing.assert_array_equal(batch.values, [defaults, defaults])
    assert batch.defaulted.all() and not batch.entity_found.any()


def test_repeated_keys_are_read_once_and_mapped_back(
    store: FeatureStore, spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = OnlineFeatureReader(store, spec)
    provider = store.provider
    calls: list[list[Any]] = []
    real = provider.online_read

    def spy(config: Any, table: Any, entity_keys: list[Any], *args: Any) -> Any:
        calls.append([key.entity_values[0].string_val for key in entity_keys])
        return real(config, table, entity_keys, *args)

    monkeypatch.setattr(provider, "online_read", spy)
    keys = [KNOWN[1], KNOWN[2], KNOWN[1], "nobody", KNOWN[2], KNOWN[1]]
    batch = reader.read(keys)

    assert calls == [[KNOWN[1], KNOWN[2], "nobody"]]  # one call, each key once
    np.testing.assert_array_equal(batch.values[[0, 2, 5]], np.repeat(batch.values[[0]], 3, 0))
    np.testing.assert_array_equal(batch.values[4], batch.values[1])
    assert batch.entity_found.tolist() == [True, True, True, False, True, True]


def test_entity_keys_kept_between_batches_still_read_the_right_rows(
    store: FeatureStore, spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small cache, so that the batches below both reuse kept keys and overflow it.
    monkeypatch.setattr("features.reader.ENTITY_KEY_CACHE_SIZE", 4)
    reader = OnlineFeatureReader(store, spec)
    batches = [
        [KNOWN[0], KNOWN[1], "nobody"],
        [KNOWN[1], KNOWN[0], KNOWN[2]],  # two kept, one new: fills the cache
        [KNOWN[3], KNOWN[1], KNOWN[4], "nobody"],  # overflows: cleared and rebuilt
        [KNOWN[4], "nobody", KNOWN[0], KNOWN[3]],
    ]
    for keys in batches:
        batch = reader.read(keys)
        assert_matches_feast(batch, expected(store, spec, keys), spec)
        assert batch.entity_found.tolist() == [k != "nobody" for k in keys]


def test_empty_batch_makes_no_call(store: FeatureStore, spec: PipelineSpec) -> None:
    batch = OnlineFeatureReader(store, spec).read([])

    assert batch.values.shape == (0, len(spec.features.refs)) and batch.entity_found.shape == (0,)


async def test_read_async_equals_read(
    repo: Path, redis_url: str, store_project: str, spec: PipelineSpec
) -> None:
    # Its own store: Feast binds the async Redis client to the first event loop using it.
    reader = OnlineFeatureReader(
        open_store(repo, RedisConnection(redis_url), project=store_project), spec
    )
    keys = [KNOWN[3], "nobody", KNOWN[3], KNOWN[7]]

    got = await reader.read_async(keys)
    want = reader.read(keys)

    for name in ("values", "defaulted", "entity_found"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_read_async_from_a_second_loop_is_refused(
    repo: Path, redis_url: str, store_project: str, spec: PipelineSpec
) -> None:
    reader = OnlineFeatureReader(
        open_store(repo, RedisConnection(redis_url), project=store_project), spec
    )
    asyncio.run(reader.read_async([KNOWN[0]]))

    with pytest.raises(FeatureStoreError, match="second event loop"):
        asyncio.run(reader.read_async([KNOWN[0]]))


def test_service_serving_other_features_is_refused(store: FeatureStore, spec: PipelineSpec) -> None:
    refs = spec.features.refs[:-1]
    features = spec.features.model_copy(
        update={"refs": refs, "defaults": {r: spec.features.defaults[r] for r in refs}}
    )
    narrower = spec.model_copy(update={"features": features})

    with pytest.raises(FeatureStoreError, match="chargeback_count_90d"):
        OnlineFeatureReader(store, narrower)


def test_unknown_service_or_feature_is_refused(store: FeatureStore, spec: PipelineSpec) -> None:
    no_service = spec.features.model_copy(update={"service": "nope_v9"})
    with pytest.raises(FeatureStoreError, match="nope_v9"):
        OnlineFeatureReader(store, spec.model_copy(update={"features": no_service}))

    ref = "card_stats:no_such_feature"
    bad_ref = spec.features.model_copy(
        update={"service": None, "refs": (ref,), "defaults": {ref: 0.0}}
    )
    with pytest.raises(FeatureStoreError, match="no_such_feature"):
        OnlineFeatureReader(store, spec.model_copy(update={"features": bad_ref}))


def test_refs_over_two_views_are_read_in_one_call(
    tmp_path: Path, redis_url: str, spec: PipelineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = copy_repo(tmp_path / "card_fraud")
    store = open_store(repo, RedisConnection(redis_url), project=project())
    apply_repo(store, repo)
    card = store.get_entity("card")
    source = FileSource(
        name="card_stats_copy_source",
        path="data/card_stats.parquet",
        timestamp_field="event_timestamp",
    )
    schema = [Field(name="avg_amount_30d", dtype=Float32)]
    copy = FeatureView(
        name="card_copy", entities=[card], ttl=timedelta(days=2), schema=schema, source=source
    )
    store.apply([source, copy])
    materialize(store)
    refs = (*spec.features.refs, "card_copy:avg_amount_30d")
    defaults = {**spec.features.defaults, "card_copy:avg_amount_30d": -1.0}
    features = spec.features.model_copy(
        update={"service": None, "refs": refs, "defaults": defaults}
    )
    wide = spec.model_copy(update={"features": features})
    reader = OnlineFeatureReader(store, wide)
    calls = Counter[str]()
    real = store.get_online_features
    monkeypatch.setattr(
        store, "get_online_features", lambda *a, **k: calls.update(["gof"]) or real(*a, **k)
    )

    keys = [KNOWN[4], "nobody", KNOWN[4]]
    batch = reader.read(keys)

    assert calls["gof"] == 1
    reference = real(list(refs), {"card_id": keys}, full_feature_names=True).to_dict()
    assert_matches_feast(batch, reference, wide)
    # One event timestamp per view, from the response; the same rows' in both views here.
    assert batch.timestamps.shape == (3, 2) and np.isnan(batch.timestamps[1]).all()
    np.testing.assert_array_equal(batch.timestamps[:, 0], batch.timestamps[:, 1])
    assert batch.timestamps[0, 0] == pytest.approx(feast_event_times(store, spec, keys)[0])
    # Same source column, so the same values wherever the card is known.
    np.testing.assert_array_equal(batch.values[[0, 2], -1], batch.values[[0, 2], 1])


def test_a_store_that_is_down_fails_with_context(
    repo: Path, store_project: str, spec: PipelineSpec
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    reader = OnlineFeatureReader(
        open_store(repo, RedisConnection(down), project=store_project), spec
    )

    with pytest.raises(FeatureStoreError, match="features.reader: online read of 1 keys"):
        reader.read([KNOWN[0]])


def test_open_store_errors_name_the_file_or_url(tmp_path: Path, redis_url: str) -> None:
    with pytest.raises(FeatureStoreError, match="feature_store.yaml"):
        open_store(tmp_path, RedisConnection(redis_url))
    with pytest.raises(FeatureStoreError, match="not redis://"):
        open_store(SOURCE_REPO, RedisConnection("http://localhost:6379"))


@pytest.mark.parametrize(
    ("url", "connection_string"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://cache", "cache:6379,db=0"),
        ("redis://:1234@cache:6380/3", 'cache:6380,db=3,password="1234"'),
        ("redis://app:p%40ss@cache:6380/1", 'cache:6380,db=1,username="app",password="p@ss"'),
        ("rediss://cache:6380/0", "cache:6380,db=0,ssl=true"),
    ],
)
def test_redis_url_to_feast_connection_string(url: str, connection_string: str) -> None:
    assert redis_connection_string(url) == connection_string


def test_a_comma_in_the_password_is_refused_without_leaking_it() -> None:
    with pytest.raises(FeatureStoreError) as caught:
        redis_connection_string("redis://:se,cret@cache:6379/0")
    assert "se,cret" not in str(caught.value) and "***" in str(caught.value)


def test_materialize_fills_a_new_online_store_after_an_earlier_run(
    repo: Path, redis_url: str, store_project: str, spec: PipelineSpec
) -> None:
    """The registry on disk remembers the module's earlier materialization; a fresh online
    store (another Redis database, as after an embedded Redis restart) must still be filled."""
    fresh_db = redis_url.rsplit("/", 1)[0] + "/5"
    store = open_store(repo, RedisConnection(fresh_db), project=store_project)
    materialize(store)
    values = expected(store, spec, KNOWN[:5])
    assert all(v is not None for v in values[feature_column(spec.features.refs[0])])
