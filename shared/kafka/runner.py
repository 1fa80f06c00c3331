"""The consumer runner, the shape of every consumer in Qianshao::

    poll a batch ─▶ handler.process(batch) ─▶ dead letters to the DLQ ─▶ commit offsets
                    (makes the effect durable)

Offsets are committed only after the handler has returned, i.e. after its effect is durable, and
after the dead letters are acknowledged by the broker. A crash anywhere before the commit means the
batch is consumed again, so handlers must be idempotent (every event carries an id for that).

A handler names poison messages itself (:class:`InvalidMessage`, or by returning them); if it
raises anything else, the runner retries the batch with backoff when the error is retriable, and
otherwise splits the batch and runs each message alone, so that one bad message is dead-lettered
and the good ones of the batch still go through.

The runner speaks to a :class:`Consumer` and a :class:`~shared.kafka.producer.Publisher`: the
broker's (aiokafka), or the in-memory broker's (:mod:`shared.kafka.memory`), so that one suite
of tests holds both to the same rules. A :class:`~shared.kafka.messages.StagedHandler` is run
as a pipeline of batches (:mod:`shared.kafka.staged`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from shared.clock import Clock
from shared.errors import QianshaoError, is_unavailable
from shared.kafka.messages import (
    BatchHandler,
    BatchResult,
    InvalidMessage,
    Received,
    StagedHandler,
    dead_letter,
)
from shared.kafka.metrics import BATCH_SECONDS, LAG, MESSAGES, RETRIES
from shared.kafka.producer import Publisher
from shared.kafka.staged import StagedLoop

log = logging.getLogger(__name__)


class Consumer(Protocol):
    """What the runner asks of a consumer (aiokafka's ``AIOKafkaConsumer`` answers to it)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Any]]: ...

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...


ConsumerFactory = Callable[[], Consumer]


@dataclass
class RunnerConfig:
    name: str
    topics: list[str]
    dlq_topic: Callable[[str], str] = lambda topic: f"{topic}.dlq"
    max_records: int = 20000
    poll_timeout_ms: int = 500
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    # errors of the drivers behind the handler that say "out of reach for now" (shared.db's):
    # the batch is retried whole, never dead-lettered
    transient: tuple[type[BaseException], ...] = field(default=())


_PLACE = attrgetter("topic", "partition")
_OFFSET = attrgetter("offset")
_TOPIC = attrgetter("topic")


def batch_of(records: Mapping[TopicPartition, Sequence[Received]]) -> list[Received]:
    """One batch, partition by partition, each in offset order."""
    out: list[Received] = []
    for tp in sorted(records, key=lambda t: (t.topic, t.partition)):
        out.extend(records[tp])
    return out


class ConsumerRunner:
    """Poll, process, dead-letter, commit — in that order, one batch at a time (or, for a staged
    handler, a few batches in hand: :mod:`shared.kafka.staged`)."""

    def __init__(
        self,
        consumer_factory: ConsumerFactory,
        handler: BatchHandler,
        producer: Publisher,
        config: RunnerConfig,
        clock: Clock,
        *,
        service: str,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._consumer_factory = consumer_factory
        self._consumer: Consumer | None = None
        self.handler = handler
        self._producer = producer
        self.config = config
        self.clock = clock
        self._service = service
        self._stopping = asyncio.Event()
        self._before_commit = before_commit
        self.batches = 0
        self.started = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit, and return."""
        self._stopping.set()

    async def run(self) -> None:
        cfg = self.config
        consumer = self._consumer = self._consumer_factory()
        await consumer.start()
        self.started.set()
        try:
            if isinstance(self.handler, StagedHandler):
                await StagedLoop(self, self.handler).run()
                return
            while not self._stopping.is_set():
                batch = await self.poll(cfg.poll_timeout_ms)
                if not batch:
                    continue
                with BATCH_SECONDS.labels(cfg.name).time():
                    if not await self.process_until_done(batch):
                        break  # stopping while a dependency is down: leave the batch uncommitted
                    await self.finish(batch)
        finally:
            await consumer.stop()

    async def poll(self, timeout_ms: int) -> list[Received]:
        assert self._consumer is not None
        return batch_of(
            await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self.config.max_records)
        )

    def transient(self, exc: BaseException) -> bool:
        """A failure a retry can cure (a dependency out of reach), not the messages' fault."""
        if isinstance(exc, QianshaoError):
            return exc.retriable
        return is_unavailable(exc, self.config.transient)

    async def finish(self, batch: Sequence[Received]) -> None:
        if self._before_commit is not None:
            await self._before_commit()
        await self._commit(batch)
        self.batches += 1

    async def settle(self, batch: Sequence[Received], result: BatchResult, started: float) -> None:
        """A completed batch's dead letters, counts and commit, in that order."""
        await self._send_dead_letters(result.dead_letters)
        self._count(batch, result.dead_letters)
        await self.finish(batch)
        BATCH_SECONDS.labels(self.config.name).observe(time.perf_counter() - started)

    async def backoff(self, delay: float) -> float:
        """Sleep about ``delay`` (with jitter); the next delay."""
        await self.clock.sleep(delay * (0.5 + random.random()))
        return min(delay * 2, self.config.retry_max_s)

    async def _commit(self, batch: Sequence[Received]) -> None:
        # each partition's last offset: a batch holds a partition's messages in offset order
        last = dict(zip(map(_PLACE, batch), map(_OFFSET, batch), strict=True))
        offsets = {TopicPartition(t, p): offset + 1 for (t, p), offset in last.items()}
        assert self._consumer is not None
        for tp, next_offset in offsets.items():
            high = self._consumer.highwater(tp)
            if high is not None:
                LAG.labels(self.config.name, tp.topic, str(tp.partition)).set(
                    max(0, high - next_offset)
                )
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance took the partitions away: the new owner re-reads from the last commit,
            # which is safe because every effect is idempotent.
            log.warning("commit failed, batch will be re-delivered", extra={"error": repr(exc)})

    async def process_until_done(self, batch: Sequence[Received]) -> bool:
        """The batch through the handler, retried while a dependency is out of reach, split
        message by message when it fails otherwise. False: stopping with it unfinished."""
        delay = self.config.retry_initial_s
        while True:
            try:
                result = await self.handler.process(batch)
                await self._send_dead_letters(result.dead_letters)
                self._count(batch, result.dead_letters)
                return True
            except Exception as exc:
                if not self.transient(exc):
                    if not isinstance(exc, QianshaoError):
                        log.exception("batch failed unexpectedly; isolating messages")
                    await self._process_one_by_one(batch)
                    return True
                RETRIES.labels(self.config.name).inc()
                log.warning(
                    "batch failed on a dependency; retrying",
                    extra={"consumer": self.config.name, "error": repr(exc), "delay_s": delay},
                )
            if self._stopping.is_set():
                return False
            delay = await self.backoff(delay)

    async def _process_one_by_one(self, batch: Sequence[Received]) -> None:
        for m in batch:
            delay = self.config.retry_initial_s
            while True:
                try:
                    result = await self.handler.process([m])
                    dead = result.dead_letters
                except InvalidMessage as exc:
                    dead = [exc]
                except Exception as exc:
                    if self.transient(exc):
                        await self.clock.sleep(delay)
                        delay = min(delay * 2, self.config.retry_max_s)
                        continue
                    if isinstance(exc, QianshaoError):
                        dead = [InvalidMessage(m, exc.code, exc.message)]
                    else:
                        log.exception("message failed; dead-lettering it")
                        dead = [InvalidMessage(m, "processing_error", repr(exc))]
                await self._send_dead_letters(dead)
                self._count([m], dead)
                break

    async def _send_dead_letters(self, dead: Sequence[InvalidMessage]) -> None:
        by_topic: dict[str, list[tuple[str | None, Any]]] = {}
        for exc in dead:
            m = exc.kafka_message
            doc = dead_letter(exc, service=self._service, clock=self.clock)
            by_topic.setdefault(self.config.dlq_topic(m.topic), []).append(
                (doc.key, doc.model_dump(mode="json"))
            )
            log.warning(
                "dead-lettered a message",
                extra={"topic": m.topic, "offset": m.offset, "reason": exc.reason},
            )
        for topic, items in by_topic.items():
            await self._producer.send_json(topic, items)

    def _count(self, batch: Sequence[Received], dead: Sequence[InvalidMessage]) -> None:
        name = self.config.name
        n_dead: dict[str, int] = {}
        for d in dead:
            n_dead[d.kafka_message.topic] = n_dead.get(d.kafka_message.topic, 0) + 1
        for topic, n in Tally(map(_TOPIC, batch)).items():
            bad = n_dead.get(topic, 0)
            MESSAGES.labels(name, topic, "ok").inc(n - bad)
            if bad:
                MESSAGES.labels(name, topic, "dead_letter").inc(bad)
