"""Which embedded broker runs, and what a user is told about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.runtime import brokers
from streams.runtime.apache_kafka import ApacheKafka
from streams.runtime.apache_kafka.install import JavaCheck
from streams.runtime.embedded import EmbeddedServerError, EmbeddedTansu
from streams.settings import Settings

NO_JAVA = JavaCheck(java=None, java_major=None, mvn=None, cached=False)
OLD_JAVA = JavaCheck(java="/usr/bin/java", java_major=11, mvn="/usr/bin/mvn", cached=False)
JAVA_NO_MVN = JavaCheck(java="/usr/bin/java", java_major=17, mvn=None, cached=False)
JAVA_CACHED = JavaCheck(java="/usr/bin/java", java_major=21, mvn=None, cached=True)
JAVA_MVN = JavaCheck(java="/usr/bin/java", java_major=17, mvn="/usr/bin/mvn", cached=False)


def choose(monkeypatch: pytest.MonkeyPatch, java: JavaCheck, kind: str) -> brokers.BrokerChoice:
    monkeypatch.setattr(brokers, "check_java", lambda cache_dir: java)
    return brokers.choose_broker(Settings(embedded_broker=kind, cache_dir=Path("/nowhere")))


@pytest.mark.parametrize("java", [JAVA_CACHED, JAVA_MVN])
def test_auto_takes_apache_kafka_where_java_allows_and_says_how_to_pick_tansu(
    monkeypatch: pytest.MonkeyPatch, java: JavaCheck
) -> None:
    choice = choose(monkeypatch, java, "auto")
    assert isinstance(choice.broker, ApacheKafka)
    assert "Apache Kafka" in choice.why and "STREAMSCORE_EMBEDDED_BROKER=tansu" in choice.why


@pytest.mark.parametrize(
    ("java", "why"),
    [(NO_JAVA, "no `java`"), (OLD_JAVA, "java 11"), (JAVA_NO_MVN, "no `mvn`")],
)
def test_auto_falls_back_to_tansu_and_says_why(
    monkeypatch: pytest.MonkeyPatch, java: JavaCheck, why: str
) -> None:
    choice = choose(monkeypatch, java, "auto")
    assert isinstance(choice.broker, EmbeddedTansu)
    assert "Tansu" in choice.why and why in choice.why


def test_kafka_asked_for_but_impossible_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(EmbeddedServerError, match="cannot run here: no `java` on PATH"):
        choose(monkeypatch, NO_JAVA, "kafka")


def test_tansu_asked_for_is_tansu_with_its_client_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    choice = choose(monkeypatch, JAVA_MVN, "tansu")
    assert isinstance(choice.broker, EmbeddedTansu)
    tuned = choice.client_settings(Settings())
    assert tuned.kafka_fetch_max_wait_ms == 10
    assert tuned.kafka_bootstrap_servers == choice.broker.bootstrap_servers


def test_apache_kafka_clients_keep_kafkas_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    choice = choose(monkeypatch, JAVA_CACHED, "kafka")
    tuned = choice.client_settings(Settings())
    assert tuned.kafka_fetch_max_wait_ms == Settings().kafka_fetch_max_wait_ms
    assert tuned.kafka_session_timeout_seconds == Settings().kafka_session_timeout_seconds


def test_broker_properties_disable_implicit_topics_and_bind_loopback(tmp_path: Path) -> None:
    broker = ApacheKafka(tmp_path)
    broker.workdir = tmp_path
    props = broker.properties()
    assert props["auto.create.topics.enable"] == "false"
    assert props["listeners"].count("127.0.0.1") == 2
    assert broker.port != broker.controller_port
    assert props["log.dirs"].startswith(str(tmp_path))
