"""An in-memory broker: topics of partitions, consumer groups' committed offsets, a consumer and a
producer that answer to what the runner asks of aiokafka's. It keeps the rules that the runner's
guarantees rest on — keys land on the partition Kafka's partitioner would choose, a partition's
records keep their order, a group resumes from what it committed — so that one test suite holds
the runner to them here (in ``make test-fast``, without a broker) and on the real broker.

One event loop, one process; nothing is persisted. Not a broker for the services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from shared.kafka.messages import Message
from shared.kafka.producer import Key


class MemoryBroker:
    def __init__(self, *, partitions: int = 3) -> None:
        self._default_partitions = partitions
        self._logs: dict[str, list[list[Message]]] = {}
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._partitioner = DefaultPartitioner()
        self._arrived = asyncio.Event()
        self._next_keyless = 0

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        if name not in self._logs:
            self._logs[name] = [[] for _ in range(partitions or self._default_partitions)]

    def partitions(self, topic: str) -> list[TopicPartition]:
        self.create_topic(topic)
        return [TopicPartition(topic, p) for p in range(len(self._logs[topic]))]

    def append(self, topic: str, key: Key, value: bytes | None) -> Message:
        self.create_topic(topic)
        log = self._logs[topic]
        every = list(range(len(log)))
        raw = key.encode() if isinstance(key, str) else key
        if raw is None:
            part = self._next_keyless % len(log)
            self._next_keyless += 1
        else:
            part = self._partitioner(raw, every, every)
        m = Message(topic, part, len(log[part]), raw, value)
        log[part].append(m)
        self._arrived.set()
        return m

    def records(self, topic: str) -> list[Message]:
        """Every record of the topic, partition by partition."""
        return [m for part in self._logs.get(topic, []) for m in part]

    def log(self, tp: TopicPartition) -> list[Message]:
        return self._logs[tp.topic][tp.partition]

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        return self._committed.get((group, tp))

    def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._committed[(group, tp)] = offset

    async def wait_for_records(self, timeout_s: float) -> None:
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout_s)

    def consumer(self, topics: Sequence[str], *, group_id: str) -> MemoryConsumer:
        return MemoryConsumer(self, topics, group_id)

    def producer(self) -> MemoryProducer:
        return MemoryProducer(self)


class MemoryConsumer:
    """The sole member of its group: every partition of its topics is its own, and it starts
    where the group last committed (the earliest record when it never did)."""

    def __init__(self, broker: MemoryBroker, topics: Sequence[str], group_id: str) -> None:
        self._broker = broker
        self._topics = list(topics)
        self._group = group_id
        self._position: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        for topic in self._topics:
            for tp in self._broker.partitions(topic):
                self._position[tp] = self._broker.committed(self._group, tp) or 0

    async def stop(self) -> None:
        self._position.clear()

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Message]]:
        out = self._take(max_records)
        if not out and timeout_ms > 0:
            await self._broker.wait_for_records(timeout_ms / 1000)
            out = self._take(max_records)
        return out

    def _take(self, max_records: int | None) -> dict[TopicPartition, list[Message]]:
        room = max_records if max_records is not None else 1 << 30
        out: dict[TopicPartition, list[Message]] = {}
        for tp, at in self._position.items():
            if room <= 0:
                break
            taken = self._broker.log(tp)[at : at + room]
            if taken:
                out[tp] = taken
                self._position[tp] = at + len(taken)
                room -= len(taken)
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._broker.commit(self._group, offsets if offsets is not None else self._position)

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self._broker.log(partition))


class MemoryProducer:
    """Sends are acknowledged at once; ``failures`` raise on the sends to come, one each."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self.failures: list[Exception] = []

    async def send_many(self, topic: str, items: Iterable[tuple[Key, bytes]]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        for key, value in items:
            self._broker.append(topic, key, value)

    async def send_json(self, topic: str, items: Iterable[tuple[str | None, Any]]) -> None:
        await self.send_many(topic, [(k, orjson.dumps(v)) for k, v in items])

    async def ping(self) -> None:
        return None

    async def stop(self) -> None:
        return None
