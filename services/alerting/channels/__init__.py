"""Delivery channels. Each is an adapter behind one small interface, :class:`Channel`: ``send``
returns when the provider accepted the message, and raises :class:`shared.errors.ProviderError`
saying whether a retry may help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.contracts import AlertVersion


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    delivery_id: int
    idempotency_key: str
    recipient: str
    target: str
    secret: str | None
    alert: AlertVersion


class Channel(Protocol):
    name: str

    async def send(self, job: DeliveryJob) -> None: ...
