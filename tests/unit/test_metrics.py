"""The metrics module: an injectable registry and a bulk observe equal to looping observe."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.metrics import LATENCY_BUCKETS, Metrics, observe_many


def histogram_samples(metrics: Metrics, name: str) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in metrics.registry.collect()
        if family.name == name
        for s in family.samples
        if not s.name.endswith("_created")
    }


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=300))
def test_observe_many_equals_looping_observe(values: list[float]) -> None:
    bulk, loop = Metrics(), Metrics()
    observe_many(bulk.end_to_end_seconds.labels("p"), np.asarray(values))
    child = loop.end_to_end_seconds.labels("p")
    for value in values:
        child.observe(value)
    a = histogram_samples(bulk, "streamscore_end_to_end_latency_seconds")
    b = histogram_samples(loop, "streamscore_end_to_end_latency_seconds")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key]), key


def test_bucket_bounds_are_inclusive() -> None:
    metrics = Metrics()
    observe_many(metrics.end_to_end_seconds.labels("p"), [LATENCY_BUCKETS[0]])
    value = metrics.registry.get_sample_value(
        "streamscore_end_to_end_latency_seconds_bucket",
        {"pipeline": "p", "le": str(LATENCY_BUCKETS[0])},
    )
    assert value == 1.0


def test_each_metrics_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.events.labels("p").inc(3)
    assert a.registry.get_sample_value("streamscore_events_total", {"pipeline": "p"}) == 3
    assert b.registry.get_sample_value("streamscore_events_total", {"pipeline": "p"}) is None
    assert a.registry.get_sample_value("process_resident_memory_bytes") is not None


def test_metrics_stay_in_memory_after_feast_sets_the_multiprocess_folder() -> None:
    import os

    import features.store  # noqa: F401  (imports the Feast SDK, which sets the variable)

    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "Feast no longer sets it: drop the fix"
    metrics = Metrics()
    counter = metrics.events.labels("p")
    counter.inc(3)
    assert not counter._value._multiprocess  # prometheus_client's own flag
    assert metrics.registry.get_sample_value("streamscore_events_total", {"pipeline": "p"}) == 3
