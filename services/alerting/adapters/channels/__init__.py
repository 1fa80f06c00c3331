"""Delivery channels. Each is an adapter behind one small interface.

- :class:`Channel`: ``send`` returns when the provider accepted the message, and raises
  :class:`shared.errors.ProviderError` saying whether a retry may help.
- :class:`BatchChannel`: providers that take many recipients per request (SMS). ``send_batch``
  answers one :class:`Outcome` per job, in order, since a provider may accept some numbers of a
  request and refuse others; it raises ``ProviderError`` when the request as a whole failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.contracts import AlertVersion
from shared.errors import ProviderError


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    delivery_id: int
    idempotency_key: str
    recipient: str
    target: str
    secret: str | None
    alert: AlertVersion
    # a text of its own (an escalation notice) instead of the warning's
    message: str | None = None
    # the recipient must confirm receipt (叫应); where, for channels that carry a link
    confirm: bool = False
    confirm_url: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the provider said about one job of a batch."""

    error: ProviderError | None = None
    provider: str | None = None
    provider_ref: str | None = None


class Channel(Protocol):
    name: str

    async def send(self, job: DeliveryJob) -> None: ...


class BatchChannel(Protocol):
    """``key`` names the request at the provider (recorded on the ledger rows first), so that
    after a crash ``reconcile`` can ask the provider which jobs it already took under any of the
    names the rows carry: ``None`` for a job it did not."""

    name: str
    max_batch: int

    async def send_batch(self, jobs: Sequence[DeliveryJob], key: str) -> list[Outcome]: ...

    async def reconcile(
        self, jobs: Sequence[DeliveryJob], keys: Sequence[str], now: datetime
    ) -> list[Outcome | None]: ...


def under(name: str, keys: Sequence[str]) -> bool:
    """Whether a provider request named ``name`` is one of ``keys`` or a part of one."""
    return any(name == k or name.startswith(f"{k}.") for k in keys)
