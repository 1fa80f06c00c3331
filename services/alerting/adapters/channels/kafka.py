"""The ``alerts.v1`` topic as a delivery channel: every warning version is published there for
upper-level push and audit, through the same ledger as every other channel.

It takes a round's rows as one batch: aiokafka queues one record batch per partition, and a
send waits for that slot no longer than the request timeout, so versions sent one message at a
time queue behind each other and, in a burst, time out (``tests/integration/
test_alerts_topic.py`` reproduced 1,855 of 3,000). Handed over together, they become one record
batch per partition and one acknowledgement."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from services.alerting.adapters.channels import DeliveryJob, Outcome
from shared.errors import BrokerError, ProviderError
from shared.kafka import EventProducer


class KafkaChannel:
    name = "kafka"
    max_batch = 2000

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer

    async def send_batch(self, jobs: Sequence[DeliveryJob], key: str) -> list[Outcome]:
        """Every job published, each to its row's topic, acknowledged by the broker; a broker
        error fails the request as a whole (retried: consumers de-duplicate by event id)."""
        by_topic: dict[str, list[tuple[str, bytes]]] = {}
        for job in jobs:
            by_topic.setdefault(job.target, []).append(
                (job.alert.warning_id, orjson.dumps(job.alert.model_dump(mode="json")))
            )
        try:
            for topic, items in by_topic.items():
                await self._producer.send_many(topic, items)
        except BrokerError as exc:
            raise ProviderError(str(exc), retriable=True) from exc
        return [Outcome(provider="kafka") for _ in jobs]

    async def reconcile(
        self, jobs: Sequence[DeliveryJob], keys: Sequence[str], now: datetime
    ) -> list[Outcome | None]:
        """A topic cannot be asked what it holds by request name: what a dead round may have
        published is published again, and its event id makes the repeat harmless."""
        return [None for _ in jobs]
