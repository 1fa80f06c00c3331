"""Upper-level platform push: each warning version POSTed to a provincial or city platform,
signed like our webhooks — as a CAP 1.2 document (GB/T 35965.1 profile), or in the national
release system's own message form for a platform that takes that."""

from __future__ import annotations

import aiohttp

from services.alerting.adapters.channels import DeliveryJob
from services.alerting.adapters.channels.http import post_signed
from services.alerting.domain.capout import CapVersion, cap_xml
from services.alerting.domain.messages import sms_text
from services.alerting.domain.nationalout import NoEventType, national_xml
from shared.errors import ProviderError


class CapPushChannel:
    name = "cap_push"

    def __init__(self, session: aiohttp.ClientSession, *, sender: str, sender_name: str) -> None:
        self._session = session
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
            self._session, job, self.document(job), "application/cap+xml; charset=utf-8", "platform"
        )


class NationalPushChannel:
    """The national release system's message form (:mod:`services.alerting.domain.nationalout`).
    A version with no GB/T 35965.1 event type cannot be said in it: a permanent failure that
    names the hazard."""

    name = "national_push"

    def __init__(self, session: aiohttp.ClientSession, *, sender: str, sender_name: str) -> None:
        self._session = session
        self._sender = sender
        self._sender_name = sender_name

    def document(self, job: DeliveryJob) -> bytes:
        v = CapVersion.of(
            job.alert, sender=self._sender, sender_name=self._sender_name, kind="internal"
        )
        try:
            return national_xml(v, sender_code=self._sender, sms=sms_text(job.alert))
        except NoEventType as exc:
            raise ProviderError(str(exc), retriable=False) from exc

    async def send(self, job: DeliveryJob) -> None:
        await post_signed(
            self._session, job, self.document(job), "application/xml; charset=utf-8", "national"
        )
