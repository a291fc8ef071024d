"""Faust's aiokafka transport with the consumer's fetch wait as a setting.

Faust 0.15 hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Apache Kafka
answers a fetch as soon as data is there, so for it the wait only paces idle polling; the
embedded Tansu broker holds every fetch for about half the wait even when data is waiting
(measured here: ~700 ms at 1,500 ms, ~4 ms at 10 ms). End-to-end latency on the embedded
broker therefore depends on it, and it becomes ``Settings.kafka_fetch_max_wait_ms``.
"""

from __future__ import annotations

from typing import Any, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by aiokafka when the consumer starts and builds its fetcher, which is later.
        consumer._fetch_max_wait_ms = cast(StreamscoreApp, self.app).fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class StreamscoreApp(faust.App):
    """A Faust app whose worker consumer uses ``fetch_max_wait_ms``."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)
