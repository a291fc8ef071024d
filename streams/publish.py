"""The publish stage: send a batch's records and wait until Kafka has them all.

Records are handed to the producer one after another without waiting (the producer batches
them per partition), then the whole batch's deliveries are awaited once. Only after that does
the agent ack the input messages, so a crash can duplicate output but never lose it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from streams.records import OutputRecord


class Publisher(Protocol):
    async def publish(self, records: Sequence[OutputRecord]) -> None: ...


class KafkaPublisher:
    """Publishes through Faust's producer (an aiokafka producer underneath)."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer

    async def publish(self, records: Sequence[OutputRecord]) -> None:
        send = self._producer.send
        deliveries = [
            await send(record.topic, record.key, record.value, None, None, None)
            for record in records
        ]
        await asyncio.gather(*deliveries)
