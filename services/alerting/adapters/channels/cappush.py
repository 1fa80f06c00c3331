"""Upper-level platform push: each warning version POSTed as a CAP 1.2 document (GB/T 35965.1
profile) to a provincial or city platform, signed like our webhooks."""

from __future__ import annotations

import httpx

from services.alerting.adapters.channels import DeliveryJob
from services.alerting.adapters.channels.http import post_signed
from services.alerting.domain.capout import CapVersion, cap_xml


class CapPushChannel:
    name = "cap_push"

    def __init__(self, client: httpx.AsyncClient, *, sender: str, sender_name: str) -> None:
        self._client = client
        self._sender = sender
        self._sender_name = sender_name

    def document(self, job: DeliveryJob) -> bytes:
        return cap_xml(
            CapVersion.of(
                job.alert, sender=self._sender, sender_name=self._sender_name, kind="internal"
            )
        )

    async def send(self, job: DeliveryJob) -> None:
        await post_signed(
            self._client, job, self.document(job), "application/cap+xml; charset=utf-8", "platform"
        )
