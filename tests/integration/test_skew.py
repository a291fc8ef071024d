"""Online/offline skew through a real worker: a wrong value written straight into the online
store for one feature of some cards is found by the sampled check (every prediction here),
for that feature and those cards only, in the worker's metrics and in `streamscore skew`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.store import open_store
from streams.cli.generators import make_generator
from streams.cli.main import app as cli
from streams.runtime.connections import RedisConnection
from streams.runtime.embedded import free_port
from streams.runtime.processes import WorkerProcess, settings_env
from streams.spec import feature_column
from tests.integration.harness import PreparedPipeline, consume, create_topics, produce, wait_until

pytestmark = pytest.mark.integration

VIEW = "card_stats"
WRONG = "avg_amount_30d"  # the feature written wrong
OFFSET = 100.0
EVENTS_PER_CARD = 3


def online_rows(store, cards: list[str]) -> pd.DataFrame:
    """The view's current online row of each card (every feature, as Feast serves it)."""
    names = [f.name for f in store.get_feature_view(VIEW).features]
    served = store.get_online_features(
        features=[f"{VIEW}:{n}" for n in names], entity_rows=[{"card_id": c} for c in cards]
    ).to_dict()
    assert all(v is not None for n in names for v in served[n]), "a card without a row"
    return pd.DataFrame({"card_id": cards, **{n: served[n] for n in names}})


def test_a_wrong_online_value_is_reported_for_that_feature_only(
    card_fraud: PreparedPipeline,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    labels = {**card_fraud.spec.labels.model_dump(), "topic": f"labels-{suffix}"}
    spec_path, spec = card_fraud.variant(
        suffix, labels=labels, monitoring={"skew": {"sample_rate": 1.0}}
    )
    settings = card_fraud.settings.model_copy(update={"metrics_port": free_port()})
    bootstrap = settings.kafka_bootstrap_servers
    asyncio.run(create_topics(settings, spec))
    store = open_store(spec.features.repo, RedisConnection.from_settings(settings))
    offline = pd.read_parquet(spec.features.repo / "data" / "card_stats.parquet")
    cards = sorted(offline["card_id"].unique())[-6:]
    altered, untouched = cards[:3], cards[3:]
    original = online_rows(store, altered)
    wrong = original.assign(**{WRONG: original[WRONG] + OFFSET})
    now = datetime.now(UTC)
    # Newer than the materialized row, so Redis keeps it; the offline store never had it.
    store.write_to_online_store(VIEW, wrong.assign(event_timestamp=now))

    generator = make_generator(spec, seed=31)
    labelled = []
    for card in cards * EVENTS_PER_CARD:
        event, label = generator.next_labelled(now)
        labelled.append(({**event, spec.entity.field: card}, label))
    id_field = spec.event.id_field
    events = [(e[id_field].encode(), orjson.dumps(e)) for e, _ in labelled]
    label_records = [
        (e[id_field].encode(), orjson.dumps({"event_id": e[id_field], "label": y}))
        for e, y in labelled
    ]
    n = len(events)
    worker = WorkerProcess(spec_path, settings, card_fraud.workdir / f"{spec.name}.log")
    try:
        asyncio.run(produce(bootstrap, spec.input.topic, events))
        asyncio.run(consume(bootstrap, [spec.output.topic], n, timeout=90, worker=worker))
        asyncio.run(produce(bootstrap, spec.labels.topic, label_records))
        base = {"pipeline": spec.name}
        wait_until(
            lambda: worker.metric("streamscore_skew_checked_total", **base) == n,
            60, [worker], f"{n} checked predictions",
        )  # fmt: skip
        mismatched, largest = {}, {}
        for ref in spec.features.refs:
            column = feature_column(ref)
            mismatched[column] = worker.metric(
                "streamscore_skew_mismatched_total", feature=column, **base
            )
            largest[column] = worker.metric(
                "streamscore_skew_max_abs_difference", feature=column, **base
            )
        unchecked = [
            worker.metric("streamscore_skew_unchecked_total", reason=r, **base)
            for r in ("busy", "failed", "no_key")
        ]
    finally:
        worker.stop()
        # Put the right values back (newer still), for the session's other tests.
        store.write_to_online_store(
            VIEW, original.assign(event_timestamp=now + timedelta(seconds=1))
        )

    wrong_column = feature_column(f"{VIEW}:{WRONG}")
    assert mismatched == {
        column: (len(altered) * EVENTS_PER_CARD if column == wrong_column else 0)
        for column in mismatched
    }
    assert largest[wrong_column] == pytest.approx(OFFSET, abs=1e-3)
    assert all(value == 0 for column, value in largest.items() if column != wrong_column)
    assert all(count in (None, 0) for count in unchecked), unchecked

    env = settings_env(settings)
    result = CliRunner().invoke(
        cli, ["skew", "--spec", str(spec_path), "--examples", "20"], env=env
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{n} predictions checked" in out, out
    # The per-feature table: "│ feature │ mismatched │ share │ max |diff| │".
    cells = [line.split() for line in out.splitlines()]
    rows = {c[1]: c for c in cells if len(c) > 1 and c[1].startswith("card_stats__")}
    assert set(rows) == {feature_column(ref) for ref in spec.features.refs}, out
    assert (rows[wrong_column][3], rows[wrong_column][5]) == ("9", "50.00%"), out
    assert all(c[3] == "0" for column, c in rows.items() if column != wrong_column), out
    example_lines = [line for line in out.splitlines() if any(c in line for c in cards)]
    assert len(example_lines) == len(altered) * EVENTS_PER_CARD, out
    assert all(wrong_column in line for line in example_lines), out
    assert not any(card in out for card in untouched), out
