"""What a consumer's handler sees and answers: the records of a batch, the poison among them, and
the shape of a handler (one step, or a staged one whose batches overlap)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from shared.clock import Clock
from shared.contracts import DeadLetter
from shared.errors import QianshaoError


class Received(Protocol):
    """A consumed record, as every handler reads it: aiokafka's ``ConsumerRecord`` as it comes
    from the broker, or a :class:`Message` (the in-memory broker's, and the tests')."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...  # None: a tombstone


class Message(NamedTuple):
    """A record made here: by the in-memory broker, or by a test."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


class InvalidMessage(QianshaoError):
    """A message that can never be processed: it goes to the dead-letter topic with ``reason``."""

    code = "invalid_message"

    def __init__(self, message: Received, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.kafka_message = message
        self.reason = reason
        self.detail = detail


def no_value(m: Received) -> InvalidMessage:
    """A tombstone (a message with no value) on a topic of events: it carries none."""
    return InvalidMessage(m, "no_value", "the message has no value")


def dead_letter(exc: InvalidMessage, *, service: str, clock: Clock) -> DeadLetter:
    m = exc.kafka_message
    return DeadLetter(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        key=m.key.decode("utf-8", "backslashreplace") if m.key is not None else None,
        payload=m.value.decode("utf-8", "backslashreplace") if m.value is not None else "",
        reason=exc.reason,
        detail=exc.detail[:2000],
        service=service,
        failed_at=clock.now(),
    )


@dataclass(slots=True)
class BatchResult:
    dead_letters: list[InvalidMessage] = field(default_factory=list)


class BatchHandler(Protocol):
    async def process(self, batch: Sequence[Received]) -> BatchResult:
        """Make the batch's effect durable; return the messages to dead-letter."""
        ...


@runtime_checkable
class StagedHandler(BatchHandler, Protocol):
    """A handler whose work splits in two, so that the runner can prepare the next batch while
    the previous ones complete:

    - ``prepare`` decodes and judges a batch, in message order, and may update what the handler
      keeps in memory (the next batch is judged on it); mostly CPU;
    - ``complete`` makes the prepared batch durable; mostly waiting on the database and broker.
      With ``after`` (the completion of the batch before, still running), it may write its own
      batch meanwhile, but what others see in order (what it publishes) waits for ``after`` to
      succeed, and if ``after`` fails, so does this one, with :class:`EarlierBatchFailed`;
    - ``discard`` undoes what ``prepare`` changed in memory, for a batch that will be handled
      again from the start.

    ``process`` must equal ``prepare`` then ``complete``, discarding when ``complete`` fails."""

    async def prepare(self, batch: Sequence[Received]) -> Any: ...

    async def complete(
        self, prepared: Any, after: asyncio.Future[BatchResult] | None = None
    ) -> BatchResult: ...

    def discard(self, prepared: Any) -> None: ...


class EarlierBatchFailed(QianshaoError):
    """A staged batch's completion stopped because the batch before it failed: it is tried
    again after that one (nothing of it was published)."""

    code = "earlier_batch_failed"
    retriable = True


async def earlier(after: asyncio.Future[BatchResult] | None) -> None:
    """Wait for ``after`` (see :class:`StagedHandler`); raise :class:`EarlierBatchFailed` if it
    failed or was cancelled. A cancellation of the waiter itself goes through as such."""
    if after is None:
        return
    await asyncio.wait([after])
    if after.cancelled() or after.exception() is not None:
        raise EarlierBatchFailed("the batch before this one did not complete")
