"""Producing: a producer that waits for ``acks=all``, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from shared.errors import BrokerError
from shared.kafka.client import KafkaConnection, connection

log = logging.getLogger(__name__)

# a record batch's largest size (the producer's max_batch_size)
BATCH_BYTES = 1 << 20

Key = str | bytes | None


class Publisher(Protocol):
    """What a consumer runner and the services need of a producer."""

    async def send_many(self, topic: str, items: Iterable[tuple[Key, bytes]]) -> None: ...

    async def send_json(self, topic: str, items: Iterable[tuple[str | None, Any]]) -> None: ...


class EventProducer:
    """A thin wrapper over :class:`AIOKafkaProducer` with ``acks=all``.

    ``send_many`` returns once the broker has acknowledged every message. Idempotence is
    requested from the broker; with ``idempotence="auto"`` a broker that refuses producer ids
    (the local Tansu broker does) is used without it, which is safe here because every consumer
    de-duplicates by event id.
    """

    def __init__(self, producer: AIOKafkaProducer, *, idempotent: bool) -> None:
        self._producer = producer
        self.idempotent = idempotent
        self._partitioner = DefaultPartitioner()
        # key → partition for a topic's partition list: murmur2 in pure Python costs ~2 µs a
        # key, and the same station keys come again and again
        # partitions → key → (the key as bytes, its partition)
        self._placed: dict[tuple[int, ...], dict[str | bytes, tuple[bytes, int]]] = {}

    @classmethod
    async def start(
        cls,
        target: str | KafkaConnection,
        *,
        client_id: str = "qianshao",
        idempotence: str = "auto",
        request_timeout_ms: int = 15000,
    ) -> EventProducer:
        """``request_timeout_ms`` bounds a request to the broker, and also how long a send
        waits for its partition's queue (aiokafka holds one batch per partition)."""
        conn = connection(target)
        common: dict[str, Any] = {
            **conn.producer_options(),
            "client_id": client_id,
            "acks": "all",
            "linger_ms": 2,
            "request_timeout_ms": request_timeout_ms,
            "max_batch_size": BATCH_BYTES,
            "max_request_size": 8 << 20,
        }
        if idempotence in ("auto", "on"):
            producer = AIOKafkaProducer(enable_idempotence=True, **common)
            try:
                await producer.start()
                return cls(producer, idempotent=True)
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
            raise BrokerError(f"cannot connect producer to {conn.bootstrap}: {exc!r}") from exc
        return cls(producer, idempotent=False)

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, value: bytes, key: Key = None) -> None:
        await self.send_many(topic, [(key, value)])

    async def send_many(self, topic: str, items: Iterable[tuple[Key, bytes]]) -> None:
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
            futures = []
            for part, messages in (await self._by_partition(topic, items)).items():
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

    async def _by_partition(
        self, topic: str, items: list[tuple[Key, bytes]]
    ) -> dict[int, list[tuple[bytes | None, bytes]]]:
        partitions = sorted(await self._producer.partitions_for(topic))
        placed = self._placed.get(tuple(partitions))
        if placed is None or len(placed) > 100_000:
            placed = self._placed[tuple(partitions)] = {}
        out: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for key, value in items:
            if key is None:  # a keyless message goes anywhere, each time anew
                part = self._partitioner(None, partitions, partitions)
                out.setdefault(part, []).append((None, value))
                continue
            hit = placed.get(key)
            if hit is None:
                raw = key.encode() if isinstance(key, str) else key
                hit = placed[key] = (raw, self._partitioner(raw, partitions, partitions))
            out.setdefault(hit[1], []).append((hit[0], value))
        return out

    async def send_json(self, topic: str, items: Iterable[tuple[str | None, Any]]) -> None:
        await self.send_many(topic, [(k, orjson.dumps(v)) for k, v in items])

    async def ping(self) -> None:
        try:
            await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise BrokerError(f"broker unreachable: {exc!r}") from exc


async def ensure_topics(
    target: str | KafkaConnection, names: Iterable[str], *, partitions: int = 3
) -> None:
    """Create the topics that do not exist yet."""
    admin = AIOKafkaAdminClient(**connection(target).options(), request_timeout_ms=15000)
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
