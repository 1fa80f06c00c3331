"""Kafka adapters: a producer that waits for ``acks=all``, topic creation, and the consumer runner.

The consumer runner is the shape of every consumer in Qianshao::

    poll a batch ─▶ handler.process(batch) ─▶ dead letters to the DLQ ─▶ commit offsets
                    (makes the effect durable)

Offsets are committed only after the handler has returned, i.e. after its effect is durable, and
after the dead letters are acknowledged by the broker. A crash anywhere before the commit means the
batch is consumed again, so handlers must be idempotent (every event carries an id for that).

A handler names poison messages itself (:class:`InvalidMessage`, or by returning them); if it
raises anything else, the runner retries the batch with backoff when the error is retriable, and
otherwise splits the batch and runs each message alone, so that one bad message is dead-lettered
and the good ones of the batch still go through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter, Gauge, Histogram

from shared.clock import Clock
from shared.contracts import DeadLetter
from shared.errors import BrokerError, QianshaoError, is_unavailable

log = logging.getLogger(__name__)

MESSAGES = Counter(
    "qianshao_consumer_messages_total",
    "Messages handled by a consumer, by outcome",
    ["consumer", "topic", "outcome"],
)
BATCH_SECONDS = Histogram(
    "qianshao_consumer_batch_seconds",
    "Time from poll to commit for one batch",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter(
    "qianshao_consumer_retries_total", "Batches retried after a dependency failure", ["consumer"]
)
LAG = Gauge(
    "qianshao_consumer_lag_messages",
    "Messages on the partition not yet committed by the consumer, after its last batch",
    ["consumer", "topic", "partition"],
)


class Message(NamedTuple):
    """One consumed record. A named tuple: one is made for every message consumed, where a
    frozen dataclass's constructor cost ~1 µs. With :func:`use_message_records` installed, the
    consumer's fetcher builds these directly in place of aiokafka's ``ConsumerRecord`` (whose
    attribute names it also answers to)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone
    timestamp_ms: int = 0
    timestamp_type: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def timestamp(self) -> int:
        return self.timestamp_ms

    @property
    def checksum(self) -> None:
        return None

    @property
    def serialized_key_size(self) -> int:
        return -1 if self.key is None else len(self.key)

    @property
    def serialized_value_size(self) -> int:
        return -1 if self.value is None else len(self.value)

    def json(self) -> Any:
        if self.value is None:
            raise no_value(self)
        return orjson.loads(self.value)


class InvalidMessage(QianshaoError):
    """A message that can never be processed: it goes to the dead-letter topic with ``reason``."""

    code = "invalid_message"

    def __init__(self, message: Message, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.kafka_message = message
        self.reason = reason
        self.detail = detail


def no_value(m: Message) -> InvalidMessage:
    """A tombstone (a message with no value) on a topic of events: it carries none."""
    return InvalidMessage(m, "no_value", "the message has no value")


@dataclass(slots=True)
class BatchResult:
    dead_letters: list[InvalidMessage] = field(default_factory=list)


class BatchHandler(Protocol):
    async def process(self, batch: Sequence[Message]) -> BatchResult:
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

    async def prepare(self, batch: Sequence[Message]) -> Any: ...

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


# Batches a staged runner holds at once: while the newest is prepared, the one before it is
# written and the one before that published. Measured on bench/ingest (200,000 readings, two
# cores): ~150 k rows/s with two (a batch's writes waited for the last one's publishing), ~175 k
# with three.
IN_HAND = 3


@dataclass(slots=True)
class _Staged:
    """A prepared batch whose completion is running."""

    batch: list[Message]
    prepared: Any
    task: asyncio.Task[BatchResult]
    started: float


# ---------------------------------------------------------------------------------------------
# producer


class EventProducer:
    """A thin wrapper over :class:`AIOKafkaProducer` with ``acks=all``.

    ``send`` returns once the broker has acknowledged the message. Idempotence is requested from
    the broker; with ``idempotence="auto"`` a broker that refuses producer ids (the local Tansu
    broker does) is used without it, which is safe here because every consumer de-duplicates by
    event id.
    """

    def __init__(
        self, producer: AIOKafkaProducer, *, idempotent: bool, ready_batches: bool = True
    ) -> None:
        self._producer = producer
        self.idempotent = idempotent
        self._partitioner = DefaultPartitioner()
        # whole record batches built in one call (shared._records), where it is built and
        # checked against this aiokafka release; else aiokafka's builder a message at a time
        self._records = ready_batch_builder() if ready_batches else None
        # key → partition for a topic's partition list: murmur2 in pure Python costs ~2 µs a key,
        # and the same station keys come again and again
        # partitions → key → (the key as bytes, its partition)
        self._placed: dict[tuple[int, ...], dict[str | bytes, tuple[bytes, int]]] = {}

    @classmethod
    async def start(
        cls,
        bootstrap: str,
        *,
        client_id: str = "qianshao",
        idempotence: str = "auto",
        ready_batches: bool = True,
    ) -> EventProducer:
        common: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "linger_ms": 2,
            "request_timeout_ms": 15000,
            "max_batch_size": BATCH_BYTES,
            "max_request_size": 8 << 20,
        }
        if idempotence in ("auto", "on"):
            producer = AIOKafkaProducer(enable_idempotence=True, **common)
            try:
                await producer.start()
                return cls(producer, idempotent=True, ready_batches=ready_batches)
            except KafkaError as exc:
                await producer.stop()
                if idempotence == "on":
                    raise BrokerError(f"broker refused an idempotent producer: {exc!r}") from exc
                log.warning("broker refused producer ids; continuing with acks=all only")
        producer = AIOKafkaProducer(**common)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise BrokerError(f"cannot connect producer to {bootstrap}: {exc!r}") from exc
        return cls(producer, idempotent=False, ready_batches=ready_batches)

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, value: bytes, key: str | bytes | None = None) -> None:
        await self.send_many(topic, [(key, value)])

    async def send_many(
        self, topic: str, items: Iterable[tuple[str | bytes | None, bytes]]
    ) -> None:
        """Send all items and wait until every one is acknowledged by the broker.

        Messages are grouped by partition (the producer's own key partitioner, so a key lands
        where ``send`` would put it) and handed over as whole batches: a message-at-a-time
        ``send`` costs ~30 µs of CPU each, a batch ~3 µs a message. Order per partition, and so
        per key, is the order given."""
        if not isinstance(items, list):
            items = list(items)
        if not items:
            return
        try:
            partitions = sorted(await self._producer.partitions_for(topic))
            placed = self._placed.get(tuple(partitions))
            if placed is None or len(placed) > 100_000:
                placed = self._placed[tuple(partitions)] = {}
            by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
            for key, value in items:
                if key is None:  # a keyless message goes anywhere, each time anew
                    part = self._partitioner(None, partitions, partitions)
                    by_partition.setdefault(part, []).append((None, value))
                    continue
                hit = placed.get(key)
                if hit is None:
                    raw = key.encode() if isinstance(key, str) else key
                    hit = placed[key] = (raw, self._partitioner(raw, partitions, partitions))
                by_partition.setdefault(hit[1], []).append((hit[0], value))
            futures = []
            for part, messages in by_partition.items():
                if self._records is not None:
                    futures += await self._send_ready(topic, part, messages)
                    continue
                batch = self._producer.create_batch()
                for key, value in messages:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        futures.append(
                            await self._producer.send_batch(batch, topic, partition=part)
                        )
                        batch = self._producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            raise BrokerError(f"a message of {len(value)} bytes exceeds a batch")
                futures.append(await self._producer.send_batch(batch, topic, partition=part))
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise BrokerError(f"send to {topic} failed: {exc!r}") from exc

    async def _send_ready(
        self, topic: str, partition: int, messages: list[tuple[bytes | None, bytes]]
    ) -> list[asyncio.Future[Any]]:
        """One partition's messages as whole record batches, each handed to the producer as
        a BatchBuilder would be (:class:`_ReadyBatch`): aiokafka's sender, retries and producer
        state apply to them as to its own."""
        assert self._records is not None
        txn = self._producer._txn_manager
        transactional = txn is not None and txn.transactional_id is not None
        now_ms = int(time.time() * 1000)
        futures = []
        for buffer, count in self._records.batches(messages, now_ms, BATCH_BYTES, transactional):
            ready = _ReadyBatch(buffer, count, self._records.seal)
            futures.append(await self._producer.send_batch(ready, topic, partition=partition))
        return futures

    async def send_json(self, topic: str, items: Iterable[tuple[str | None, Any]]) -> None:
        await self.send_many(topic, ((k, orjson.dumps(v)) for k, v in items))

    async def ping(self) -> None:
        try:
            await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise BrokerError(f"broker unreachable: {exc!r}") from exc


async def ensure_topics(bootstrap: str, names: Iterable[str], *, partitions: int = 3) -> None:
    """Create the topics that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in wanted]
                )
    finally:
        await admin.close()


# ---------------------------------------------------------------------------------------------
# consumer runner


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


@dataclass
class RunnerConfig:
    name: str
    topics: list[str]
    dlq_topic: Callable[[str], str] = lambda topic: f"{topic}.dlq"
    max_records: int = 20000
    poll_timeout_ms: int = 500
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0


ConsumerFactory = Callable[[], AIOKafkaConsumer]

# How long the broker may hold a fetch open waiting for data. The local Tansu broker answers a fetch
# only when this runs out (measured: about 200 ms end to end with the 500 ms default, three
# consumer hops), so we keep it short; an idle consumer then polls a few times a second.


class ConsumerRunner:
    """Poll, process, dead-letter, commit — in that order, one batch at a time."""

    def __init__(
        self,
        consumer_factory: ConsumerFactory,
        handler: BatchHandler,
        producer: EventProducer,
        config: RunnerConfig,
        clock: Clock,
        *,
        service: str,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._consumer_factory = consumer_factory
        self._consumer: AIOKafkaConsumer | None = None
        self._handler = handler
        self._producer = producer
        self._config = config
        self._clock = clock
        self._service = service
        self._stopping = asyncio.Event()
        self._before_commit = before_commit
        self.batches = 0
        self.started = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit, and return."""
        self._stopping.set()

    async def run(self) -> None:
        cfg = self._config
        consumer = self._consumer = self._consumer_factory()
        await consumer.start()
        self.started.set()
        try:
            if isinstance(self._handler, StagedHandler):
                await self._run_staged(consumer, self._handler)
                return
            while not self._stopping.is_set():
                batch = _messages(
                    await consumer.getmany(
                        timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_records
                    )
                )
                if not batch:
                    continue
                with BATCH_SECONDS.labels(cfg.name).time():
                    if not await self._process_until_done(batch):
                        break  # stopping while a dependency is down: leave the batch uncommitted
                    await self._finish(batch)
        finally:
            await consumer.stop()

    async def _finish(self, batch: list[Message]) -> None:
        if self._before_commit is not None:
            await self._before_commit()
        await self._commit(batch)
        self.batches += 1

    async def _run_staged(self, consumer: AIOKafkaConsumer, handler: StagedHandler) -> None:
        """A pipeline of three batches: the newest is prepared while the one before it is
        written and the one before that published (each handler orders its own steps; see
        :class:`StagedHandler`). Offsets are still committed batch by batch, in order, each
        after its batch is durable.

        When a batch cannot complete for a reason that a retry will not cure, it and the batches
        prepared after it are discarded (newest first) and go through the sequential path, which
        isolates the faulty message."""
        cfg = self._config
        pending: list[_Staged] = []  # oldest first, at most IN_HAND
        try:
            while not self._stopping.is_set():
                batch = _messages(
                    await consumer.getmany(
                        timeout_ms=0 if pending else cfg.poll_timeout_ms,
                        max_records=cfg.max_records,
                    )
                )
                if not batch and not pending:
                    continue
                started = time.perf_counter()
                prepared: Any = None
                if batch:
                    try:
                        prepared = await handler.prepare(batch)
                    except Exception:
                        log.exception("preparing a batch failed; handling it message by message")
                        prepared = None
                if prepared is not None:
                    # its writes start now, beside the previous batch's publishing and before
                    # that one's commit, so neither round trip is on the critical path
                    pending.append(
                        _Staged(batch, prepared, self._start(handler, prepared, pending), started)
                    )
                    if len(pending) < IN_HAND:
                        continue
                    if not await self._settle_oldest(handler, pending):
                        return
                    continue
                while pending:  # nothing new to prepare: finish what is in hand, in order
                    if not await self._settle_oldest(handler, pending):
                        return
                if batch:  # its preparation failed
                    with BATCH_SECONDS.labels(cfg.name).time():
                        if not await self._process_until_done(batch):
                            return
                        await self._finish(batch)
        finally:
            while pending:
                outcome = await self._await_staged(handler, pending)
                if not isinstance(outcome, BatchResult):
                    await self._abandon(handler, pending)  # left uncommitted: they come again
                    break
                await self._settle_first(handler, pending, outcome)

    @staticmethod
    def _start(
        handler: StagedHandler, prepared: Any, before: list[_Staged]
    ) -> asyncio.Task[BatchResult]:
        """Start a completion after the last of ``before``."""
        after = before[-1].task if before else None
        return asyncio.create_task(handler.complete(prepared, after))

    async def _settle_oldest(self, handler: StagedHandler, pending: list[_Staged]) -> bool:
        """Wait for the oldest batch in hand and commit it. When it fails for good, every batch
        in hand is undone (newest first: each was judged on the ones before) and handled again
        on the sequential path. False: stopping with batches left uncommitted."""
        outcome = await self._await_staged(handler, pending)
        if isinstance(outcome, BatchResult):
            await self._settle_first(handler, pending, outcome)
            return True
        batches = [s.batch for s in pending]
        await self._abandon(handler, pending)
        if outcome is None:
            return False
        for batch in batches:
            with BATCH_SECONDS.labels(self._config.name).time():
                if not await self._process_until_done(batch):
                    return False
                await self._finish(batch)
        return True

    async def _settle_first(
        self, handler: StagedHandler, pending: list[_Staged], outcome: BatchResult
    ) -> None:
        """Commit the oldest batch in hand, completed with ``outcome``. If that fails, nor may
        the batches after it be committed (their commits would cover its offsets): they are
        undone, and all come again."""
        done = pending.pop(0)
        try:
            await self._settle(done.batch, outcome, done.started)
        except BaseException:
            await self._abandon(handler, pending)
            raise

    @staticmethod
    async def _abandon(handler: StagedHandler, pending: list[_Staged]) -> None:
        """Let the completions in hand end (a later one fails once its predecessor has), then
        undo their batches, newest first."""
        await asyncio.gather(*(s.task for s in pending), return_exceptions=True)
        for s in reversed(pending):
            handler.discard(s.prepared)
        pending.clear()

    async def _await_staged(
        self, handler: StagedHandler, pending: list[_Staged]
    ) -> BatchResult | Literal[False] | None:
        """Wait for the oldest batch in hand, retrying its completion (and so the later ones',
        which wait on it) while the failure is one a retry can cure: its result, for
        :meth:`_settle`. False: it failed for good and must be discarded and handled again on
        the sequential path; None: stopping with it unfinished (uncommitted). Neither discards."""
        delay = self._config.retry_initial_s
        while True:
            try:
                return await pending[0].task
            except Exception as exc:
                retriable = exc.retriable if isinstance(exc, QianshaoError) else is_unavailable(exc)
                if isinstance(exc, InvalidMessage) or not retriable:
                    log.warning(
                        "a prepared batch failed; handling it again message by message",
                        extra={"consumer": self._config.name, "error": repr(exc)},
                    )
                    return False
                RETRIES.labels(self._config.name).inc()
                log.warning(
                    "batch failed on a dependency; retrying",
                    extra={"consumer": self._config.name, "error": repr(exc), "delay_s": delay},
                )
                # the later completions fail with it (they wait on it): let them end first
                await asyncio.gather(*(s.task for s in pending[1:]), return_exceptions=True)
                if self._stopping.is_set():
                    return None
                await self._clock.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._config.retry_max_s)
                for i, s in enumerate(pending):
                    s.task = self._start(handler, s.prepared, pending[:i])

    async def _settle(self, batch: list[Message], result: BatchResult, started: float) -> None:
        """A completed batch's dead letters, counts and commit, in that order."""
        await self._send_dead_letters(result.dead_letters)
        self._count(batch, result.dead_letters)
        await self._finish(batch)
        BATCH_SECONDS.labels(self._config.name).observe(time.perf_counter() - started)

    async def _commit(self, batch: Sequence[Message]) -> None:
        # each partition's last offset: a batch holds a partition's messages in offset order
        last = dict(
            zip(map(_PLACE, batch), map(_OFFSET, batch), strict=True)
        )  # (topic, partition) → offset
        offsets = {TopicPartition(t, p): offset + 1 for (t, p), offset in last.items()}
        assert self._consumer is not None
        for tp, next_offset in offsets.items():
            high = self._consumer.highwater(tp)
            if high is not None:
                LAG.labels(self._config.name, tp.topic, str(tp.partition)).set(
                    max(0, high - next_offset)
                )
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance took the partitions away: the new owner re-reads from the last commit,
            # which is safe because every effect is idempotent.
            log.warning("commit failed, batch will be re-delivered", extra={"error": repr(exc)})

    async def _process_until_done(self, batch: list[Message]) -> bool:
        delay = self._config.retry_initial_s
        while True:
            try:
                result = await self._handler.process(batch)
                await self._send_dead_letters(result.dead_letters)
                self._count(batch, result.dead_letters)
                return True
            except QianshaoError as exc:
                if not exc.retriable:
                    await self._process_one_by_one(batch)
                    return True
                RETRIES.labels(self._config.name).inc()
                log.warning(
                    "batch failed on a dependency; retrying",
                    extra={"consumer": self._config.name, "error": repr(exc), "delay_s": delay},
                )
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("batch failed unexpectedly; isolating messages")
                    await self._process_one_by_one(batch)
                    return True
                # a dependency out of reach (a database restarting, say) is no fault of the
                # messages: the batch is retried whole, never dead-lettered
                RETRIES.labels(self._config.name).inc()
                log.warning(
                    "batch failed on an unreachable dependency; retrying",
                    extra={"consumer": self._config.name, "error": repr(exc), "delay_s": delay},
                )
            if self._stopping.is_set():
                return False
            await self._clock.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._config.retry_max_s)

    async def _process_one_by_one(self, batch: list[Message]) -> None:
        for m in batch:
            delay = self._config.retry_initial_s
            while True:
                try:
                    result = await self._handler.process([m])
                    dead = result.dead_letters
                except InvalidMessage as exc:
                    dead = [exc]
                except QianshaoError as exc:
                    if exc.retriable:
                        await self._clock.sleep(delay)
                        delay = min(delay * 2, self._config.retry_max_s)
                        continue
                    dead = [InvalidMessage(m, exc.code, exc.message)]
                except Exception as exc:
                    if is_unavailable(exc):
                        await self._clock.sleep(delay)
                        delay = min(delay * 2, self._config.retry_max_s)
                        continue
                    log.exception("message failed; dead-lettering it")
                    dead = [InvalidMessage(m, "processing_error", repr(exc))]
                await self._send_dead_letters(dead)
                self._count([m], dead)
                break

    async def _send_dead_letters(self, dead: Sequence[InvalidMessage]) -> None:
        by_topic: dict[str, list[tuple[str | None, Any]]] = {}
        for exc in dead:
            m = exc.kafka_message
            doc = dead_letter(exc, service=self._service, clock=self._clock)
            by_topic.setdefault(self._config.dlq_topic(m.topic), []).append(
                (doc.key, doc.model_dump(mode="json"))
            )
            log.warning(
                "dead-lettered a message",
                extra={"topic": m.topic, "offset": m.offset, "reason": exc.reason},
            )
        for topic, items in by_topic.items():
            await self._producer.send_json(topic, items)

    def _count(self, batch: Sequence[Message], dead: Sequence[InvalidMessage]) -> None:
        name = self._config.name
        n_dead: dict[str, int] = {}
        for d in dead:
            n_dead[d.kafka_message.topic] = n_dead.get(d.kafka_message.topic, 0) + 1
        for topic, n in Tally(map(itemgetter(0), batch)).items():  # 0: Message.topic
            bad = n_dead.get(topic, 0)
            MESSAGES.labels(name, topic, "ok").inc(n - bad)
            if bad:
                MESSAGES.labels(name, topic, "dead_letter").inc(bad)


FETCH_MAX_WAIT_MS = 50


def _messages(records: dict[TopicPartition, list[Any]]) -> list[Message]:
    """One batch, partition by partition, in offset order."""
    out: list[Message] = []
    for tp in sorted(records, key=lambda t: (t.topic, t.partition)):
        rs = records[tp]
        if rs and type(rs[0]) is not Message:  # aiokafka's own records: the fast path is off
            new = tuple.__new__
            rs = [
                new(
                    Message,
                    (
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        r.timestamp,
                        r.timestamp_type,
                        tuple(r.headers),
                    ),
                )
                for r in rs
            ]
        out.extend(rs)
    return out


# aiokafka releases whose fetcher's private ``PartitionRecords._consumer_record(tp, record)`` the
# fast path below has been checked against (tests/integration/test_kafka_records.py)
MESSAGE_RECORDS_TESTED = ("0.14.",)
_PLACE = itemgetter(0, 1)  # a Message's (topic, partition)
_OFFSET = itemgetter(2)
BATCH_BYTES = 1 << 20  # a record batch's largest size (the producer's max_batch_size)


class _ReadyBatch:
    """A record batch built whole by shared._records, as aiokafka's producer uses a
    ``BatchBuilder`` (``MessageBatch`` and the sender call these, and only these): closed to
    further messages; the producer state (idempotence) is sealed into it, CRC and all, when the
    sender sets it."""

    def __init__(self, buffer: bytearray, count: int, seal: Callable[..., None]) -> None:
        self._buffer = buffer
        self._count = count
        self._seal = seal

    def append(self, **_message: Any) -> None:
        return None  # full: the accumulator starts another batch for any message after it

    def close(self) -> None:
        pass

    def closed(self) -> bool:
        return True

    def size(self) -> int:
        return len(self._buffer)

    def record_count(self) -> int:
        return self._count

    def _set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int
    ) -> None:
        self._seal(self._buffer, producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytearray:
        return self._buffer


def ready_batch_builder(version: str | None = None) -> Any:
    """``shared._records`` where it was built (a C compiler at install) and this aiokafka
    release is one its batches were checked against; else None (aiokafka's builder)."""
    import aiokafka

    if not (version or aiokafka.__version__).startswith(MESSAGE_RECORDS_TESTED):
        return None
    try:
        from shared import _records
    except ImportError:
        return None
    return _records


def use_message_records(version: str | None = None) -> bool:
    """Have aiokafka's fetcher build :class:`Message` tuples instead of ``ConsumerRecord``
    dataclasses (and so no conversion after ``getmany``). Measured on a consumer doing nothing
    else, fetching cost ~3.3 µs of CPU a message, ~1.9 µs of it in making the record (a
    dataclass with eleven fields, tracked by the garbage collector) and converting it.

    A process-wide switch on a private method, so it is guarded: installed only on the aiokafka
    releases in :data:`MESSAGE_RECORDS_TESTED` and when the method is where it is expected, and a
    consumer with deserializers still gets aiokafka's own records. ``False`` when not installed
    (everything works the same, at aiokafka's cost)."""
    import aiokafka
    from aiokafka.consumer import fetcher

    if not (version or aiokafka.__version__).startswith(MESSAGE_RECORDS_TESTED):
        return False
    records = getattr(fetcher, "PartitionRecords", None)
    original = getattr(records, "_consumer_record", None)
    if records is None or original is None:
        return False
    if getattr(original, "makes_messages", False):
        return True
    new = tuple.__new__

    def message_record(self: Any, tp: TopicPartition, record: Any) -> Any:
        if self._key_deserializer is not None or self._value_deserializer is not None:
            return original(self, tp, record)
        return new(
            Message,
            (
                tp.topic,
                tp.partition,
                record.offset,
                record.key,
                record.value,
                record.timestamp,
                record.timestamp_type,
                tuple(record.headers),
            ),
        )

    message_record.makes_messages = True  # type: ignore[attr-defined]
    records._consumer_record = message_record
    compiled = ready_batch_builder(version)
    if compiled is not None:
        # the same Message, made in C: set on each PartitionRecords without deserializers, in
        # place of the method above (a Python frame a message)
        make = compiled.message_maker(Message)
        init = records.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if self._key_deserializer is None and self._value_deserializer is None:
                self._consumer_record = make

        records.__init__ = __init__
    return True


def make_consumer(
    bootstrap: str, topics: Sequence[str], *, group_id: str, client_id: str = "qianshao"
) -> AIOKafkaConsumer:
    use_message_records()
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        isolation_level="read_uncommitted",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
