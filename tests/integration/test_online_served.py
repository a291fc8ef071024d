"""The online model on a real labelled stream: River's bundled Phishing dataset (1,250 rows,
no download), replayed in its natural order through Kafka at 200 events/s with each label
sent 50 events after its event, through one real worker (role ``all``).

What it served (its published shadow records) must be as accurate as River's own
``progressive_val_score(delay=50)`` with the same model, within 1 point: the serving
snapshot is fresh. And the accuracy the service reports must be the one recomputed from
those records: it is evaluated on what it served.

The replay, River's reference and the figures are load_tests/online_served.py's, shared with
the 2,000 events/s benchmark (``python -m load_tests.online_accuracy``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
import redis

from load_tests.online_served import (
    PHISHING_SPEC,
    buckets,
    decisions_at_served_staleness,
    progressive_decisions,
    replay,
    river_reference,
    served_by_event,
    served_figures,
    share_within,
    spread,
)
from load_tests.processes import scrape
from streams.cli.compare import labelled_evaluation
from streams.runtime.connections import RedisConnection
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess
from streams.scoring.prediction_store import Keys
from streams.settings import Settings
from tests.integration.harness import (
    PreparedPipeline,
    consume,
    create_topics,
    produce,
    read_to_end,
)
from tests.specs.phishing.pages import event, rows

pytestmark = pytest.mark.integration

DELAY = 50  # events between an event and its label
RATE = 200.0  # events per second


@pytest.fixture(scope="module")
def phishing(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    return PreparedPipeline.prepare(
        PHISHING_SPEC, tmp_path_factory.mktemp("phishing"), base_settings
    )


def progress(worker: WorkerProcess) -> str:
    counts = {
        name: worker.metric(f"streamscore_{name}")
        for name in ("events_total", "predictions_total", "online_learned_total", "shadow_errors")
    }
    for outcome in ("joined", "orphan", "late", "duplicate", "invalid"):
        counts[outcome] = worker.metric("streamscore_labels_total", outcome=outcome)
    return ", ".join(f"{k}={v}" for k, v in counts.items())


def wait_for(condition, timeout: float, worker: WorkerProcess, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.running, f"worker exited while waiting for {what}:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, (
            f"no {what} in {timeout}s ({progress(worker)}):\n{worker.log_tail()}"
        )
        time.sleep(0.1)


def test_the_online_model_serves_fresh_and_is_reported_on_what_it_served(
    phishing: PreparedPipeline,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    base = phishing.spec
    labels = {**base.labels.model_dump(), "topic": f"{base.labels.topic}-{suffix}"}
    spec_path, spec = phishing.variant(suffix, labels=labels)
    settings = phishing.settings.model_copy(update={"metrics_port": free_port()})
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(create_topics(settings, spec))
    online = spec.online.name
    n = len(rows())

    worker = WorkerProcess(spec_path, settings, phishing.workdir / f"{suffix}.log")
    try:
        wait_for(lambda: (worker.probe("/ready") or (0,))[0] == 200, 60, worker, "readiness")
        # One event first, so the replay meets a warm worker (its first batch pays the
        # feature store's and the models' first calls): a label that outruns its event's
        # prediction is an orphan, and the stream starts when the worker serves.
        warmup = orjson.dumps({**event(0, rows()[0][0], datetime.now(UTC)), "page_id": "warmup"})
        asyncio.run(produce(bootstrap, spec.input.topic, [(b"warmup", warmup)]))
        asyncio.run(consume(bootstrap, [spec.output.topic], 1, 60, worker))
        asyncio.run(replay(bootstrap, spec.input.topic, spec.labels.topic, rate=RATE, delay=DELAY))
        learned = {"pipeline": spec.name, "model": online}

        def settled() -> float:
            # On a loaded machine a label can outrun its event's prediction (an orphan).
            taken = worker.metric("streamscore_online_learned_total", **learned) or 0
            return taken + (worker.metric("streamscore_labels_total", outcome="orphan") or 0)

        wait_for(lambda: settled() >= n, 60, worker, "every label learned or orphaned")
        samples = scrape(settings.metrics_port) or {}
        reported = worker.metric("streamscore_online_metric", **learned, metric="accuracy")
        as_learned = worker.metric(
            "streamscore_online_as_learned_metric", **learned, metric="accuracy"
        )
        shed = worker.metric("streamscore_shadow_shed_events_total", **learned) or 0
    finally:
        assert worker.stop() == 0, worker.log_tail()

    records = asyncio.run(read_to_end(bootstrap, {spec.shadow_topic: spec.output_partitions}))
    served = served_by_event((orjson.loads(r.value) for r in records[spec.shadow_topic]), online)
    assert shed == 0, f"the online shadow shed {shed:.0f} events (its queue was full)"
    assert sorted(served) == list(range(n)), "the online shadow scored every event once"
    truth = [y for _, y in rows()]
    figures = served_figures(served, truth, DELAY)
    accuracy, correct = figures.accuracy, figures.correct

    # Staleness in events: labels sent before event j (0..j - DELAY) its snapshot lacked.
    behind = spread(figures.behind.values())
    reference = river_reference(spec.online, DELAY).whole
    # The same progressive validation deciding as the service does (score >= threshold):
    # River's predict_one breaks the untrained model's 0.5 ties the other way.
    threshold = spec.model.threshold if spec.model.threshold is not None else 0.5
    same_rule = float(np.mean(progressive_decisions(spec.online, DELAY, threshold=threshold)))
    print(
        f"\nserved accuracy {accuracy:.4f}, River progressive_val_score(delay={DELAY})"
        f" {reference:.4f} ({same_rule:.4f} deciding score >= {threshold}), as learned"
        f" {as_learned:.4f}; labels behind per event: median"
        f" {behind['median']:.0f}, p90 {behind['p90']:.0f}, max {behind['max']:.0f}"
    )
    behind_metric = buckets(samples, "streamscore_online_labels_behind", **learned)
    age = buckets(samples, "streamscore_online_snapshot_age_seconds", **learned)
    print(
        f"metrics: {behind_metric[float('inf')]:.0f} online predictions observed; labels behind"
        f" <= 5: {share_within(behind_metric, 5):.1%},"
        f" <= 10: {share_within(behind_metric, 10):.1%};"
        f" snapshot age <= 50 ms: {share_within(age, 0.05):.1%}, <= 100 ms:"
        f" {share_within(age, 0.1):.1%}"
    )
    assert behind_metric[float("inf")] >= n / 2  # observed for (nearly) every prediction
    # What it served is River's model at the staleness each event met: progressive
    # validation replayed with every event's own learned count decides the same, but for
    # the few labels learned out of send order (held ones). This holds however loaded the
    # machine: a loaded one serves staler, and the replay is as stale.
    staleness = {k: int(record["learned_labels"]) for k, record in served.items()}
    at_staleness = decisions_at_served_staleness(spec.online, staleness, threshold)
    replayed = float(np.mean([at_staleness[k] == correct[k] for k in correct]))
    print(f"served decisions River's at their staleness: {replayed:.2%}")
    assert replayed >= 0.99, f"only {replayed:.2%} of served decisions are River's then"
    # Fresh: near River's progressive validation deciding the same way (the gap is
    # staleness alone: within a point on a quiet machine, as the benchmark in README
    # measures; 3 here, where other tests share the cores), and near River's own figure
    # but for the ties it breaks the other way (4 of the first 50 rows: computed).
    assert abs(accuracy - same_rule) <= 0.03
    assert abs(accuracy - reference) <= 0.03 + abs(reference - same_rule)

    # Reported = recomputed from the records, row by row in label order (here the event
    # order). The stored evaluation's window (the last 1,000 labels it evaluated the online
    # model on) must be exactly the published scores of the last labels learned (the
    # learned-ids keys say which), except labels that joined before the online shadow had
    # stored its score: nothing served to evaluate them on, so they are left out, never
    # scored afresh (a few, when the shadow lags on a loaded machine).
    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(spec.name)
    joined = [i for i in range(n) if client.exists(keys.learned(f"page-{i}"))]
    window = orjson.loads(client.get(keys.evaluation))["models"][online]
    client.close()
    evaluation = labelled_evaluation(spec, RedisConnection.from_settings(settings))[online]
    unscored = len(joined) - evaluation["count"]
    print(f"{n - len(joined)} orphan labels, {unscored:.0f} joined before the served score")
    assert len(joined) >= n - 50 and 0 <= unscored <= 0.1 * n
    evaluated: list[int] = []
    candidates = iter(reversed(joined))
    for score in reversed(window["scores"]):
        evaluated.append(next(i for i in candidates if served[i]["score"] == score))
    assert len(joined) - len(evaluated) - joined.index(evaluated[-1]) <= unscored
    recomputed = np.mean([correct[i] for i in evaluated])
    assert reported == pytest.approx(evaluation["accuracy"], abs=1e-12)
    assert reported == pytest.approx(recomputed, abs=1e-12)
