"""A worker's topics: created with the spec's partitions, and a mismatch reported."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.runtime.connections import KafkaConnection
from streams.runtime.topics import declare_topics, ensure_topics, spec_topics
from tests.integration.harness import PreparedPipeline

pytestmark = pytest.mark.integration


def test_declare_creates_every_spec_topic_and_reports_a_partition_mismatch(
    card_fraud: PreparedPipeline, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, spec = card_fraud.variant(unique)
    bootstrap = KafkaConnection.from_settings(card_fraud.settings)
    wanted = spec_topics(spec)
    # The output topic already exists, with one partition more than the spec says.
    out = spec.output.topic
    assert asyncio.run(ensure_topics(bootstrap, {out: wanted[out] + 1})) == {}
    with caplog.at_level(logging.WARNING, logger="streams.runtime.topics"):
        differing = asyncio.run(declare_topics(spec, bootstrap))
    assert differing == {out: wanted[out] + 1}
    assert f"topic {out!r} has {wanted[out] + 1} partitions, the spec declares" in caplog.text
    # Everything else now exists exactly as declared: asking again reports nothing else.
    assert asyncio.run(ensure_topics(bootstrap, wanted)) == {out: wanted[out] + 1}
