"""Which embedded broker the demo, ``streamscore servers``, the tests and the load tests start.

``Settings.embedded_broker``: ``kafka`` is Apache Kafka (needs Java 17+, and Maven the first
time), ``tansu`` the zero-Java fallback from a Python wheel, ``auto`` (the default) Apache
Kafka where Java allows it, else Tansu. A configured ``kafka_bootstrap_servers`` pointing at
a real cluster uses none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.runtime.apache_kafka import ApacheKafka, check_java
from streams.runtime.embedded import EmbeddedServerError, EmbeddedTansu
from streams.settings import KAFKA_SECURITY_FIELDS, Settings, defaults_of

EmbeddedBroker = ApacheKafka | EmbeddedTansu


@dataclass(frozen=True)
class BrokerChoice:
    broker: EmbeddedBroker
    why: str  # one line for the user: which broker, and how to pick the other

    def client_settings(self, settings: Settings) -> Settings:
        """``settings`` pointed at this broker (PLAINTEXT, as it listens), with the client
        tuning it needs (if any)."""
        update = {
            "kafka_bootstrap_servers": self.broker.bootstrap_servers,
            **defaults_of(KAFKA_SECURITY_FIELDS),
        }
        return settings.model_copy(update={**update, **self.broker.client_tuning})


def choose_broker(settings: Settings) -> BrokerChoice:
    choice = settings.embedded_broker
    if choice == "tansu":
        return BrokerChoice(EmbeddedTansu(), "broker: Tansu (STREAMSCORE_EMBEDDED_BROKER=tansu)")
    java = check_java(settings.cache_dir)
    if java.usable:
        other = "; STREAMSCORE_EMBEDDED_BROKER=tansu for the Python-only one"
        how = "" if choice == "kafka" else other
        return BrokerChoice(
            ApacheKafka(settings.cache_dir),
            f"broker: Apache Kafka (Java found{how})",
        )
    if choice == "kafka":
        msg = (
            f"STREAMSCORE_EMBEDDED_BROKER=kafka, but Apache Kafka cannot run here:"
            f" {java.why_not} (install OpenJDK 17+ and Maven, or choose tansu)"
        )
        raise EmbeddedServerError(msg)
    return BrokerChoice(
        EmbeddedTansu(),
        f"broker: Tansu, the Python-only fallback ({java.why_not}; Apache Kafka needs"
        " Java 17+ and Maven)",
    )
