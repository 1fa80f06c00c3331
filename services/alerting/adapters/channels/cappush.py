"""Upper-level platform push: each warning version POSTed as a CAP 1.2 document (GB/T 35965.1
profile) to a provincial or city platform, signed like our webhooks."""

from __future__ import annotations

import httpx

from services.alerting.adapters.channels import DeliveryJob
from services.alerting.adapters.channels.http import post_signed
from services.alerting.domain.capout import CapVersion, cap_xml
from shared.contracts import Level


class CapPushChannel:
    name = "cap_push"

    def __init__(self, client: httpx.AsyncClient, *, sender: str, sender_name: str) -> None:
        self._client = client
        self._sender = sender
        self._sender_name = sender_name

    def document(self, job: DeliveryJob) -> bytes:
        a = job.alert
        return cap_xml(
            CapVersion(
                identifier=a.identifier,
                sender=a.relayed_from or self._sender,
                sender_name=a.relayed_from or self._sender_name,
                sent=a.sent,
                status=a.status,
                msg_type=a.msg_type,
                kind="internal",
                references=a.references,
                hazard=a.hazard,
                level=Level.parse(a.level),
                region_code=a.region_code,
                headline=a.headline,
                description=a.description,
                station_ids=a.station_ids,
                expires=a.expires,
                area_desc=a.area_desc,
            )
        )

    async def send(self, job: DeliveryJob) -> None:
        await post_signed(
            self._client, job, self.document(job), "application/cap+xml; charset=utf-8", "platform"
        )
