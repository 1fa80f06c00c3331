"""The ``alerts.v1`` topic as a delivery channel: every warning version is published there for
upper-level push and audit, through the same ledger as every other channel."""

from __future__ import annotations

import orjson

from services.alerting.adapters.channels import DeliveryJob
from shared.errors import BrokerError, ProviderError
from shared.kafka import EventProducer


class KafkaChannel:
    name = "kafka"

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer

    async def send(self, job: DeliveryJob) -> None:
        try:
            await self._producer.send(
                job.target,
                orjson.dumps(job.alert.model_dump(mode="json")),
                key=job.alert.warning_id,
            )
        except BrokerError as exc:
            raise ProviderError(str(exc), retriable=True) from exc
