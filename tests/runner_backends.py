"""The two brokers the runner's test suite runs on (``tests/runner_suite.py``): the in-memory one
(``shared.kafka.memory``, in ``make test-fast``) and the real one (Tansu, in the integration
tests). Each answers the same few questions a test asks of a broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from shared.devstack.broker import TansuBroker
from shared.kafka import ConsumerFactory, EventProducer, Publisher, ensure_topics, make_consumer
from shared.kafka.memory import MemoryBroker
from tests.kafka_util import committed, produce, read_all


class Backend(Protocol):
    name: str

    async def topics(self, names: list[str], *, partitions: int = 1) -> None: ...

    async def produce(self, topic: str, items: list[tuple[str | None, bytes | None]]) -> None: ...

    def consumer_factory(self, topics: list[str], group: str) -> ConsumerFactory: ...

    async def producer(self) -> Publisher: ...

    async def close_producer(self, producer: Publisher) -> None: ...

    async def committed(self, group: str, topic: str) -> int: ...

    async def read(self, topic: str) -> list[Any]: ...


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.broker = MemoryBroker()

    async def topics(self, names: list[str], *, partitions: int = 1) -> None:
        for n in names:
            self.broker.create_topic(n, partitions)

    async def produce(self, topic: str, items: list[tuple[str | None, bytes | None]]) -> None:
        for key, value in items:
            self.broker.append(topic, key, value)

    def consumer_factory(self, topics: list[str], group: str) -> ConsumerFactory:
        return lambda: self.broker.consumer(topics, group_id=group)

    async def producer(self) -> Publisher:
        return self.broker.producer()

    async def close_producer(self, producer: Publisher) -> None:
        return None

    async def committed(self, group: str, topic: str) -> int:
        return sum(self.broker.committed(group, tp) or 0 for tp in self.broker.partitions(topic))

    async def read(self, topic: str) -> list[Any]:
        return [orjson.loads(m.value) for m in self.broker.records(topic) if m.value is not None]


class KafkaBackend:
    name = "kafka"

    def __init__(self, broker: TansuBroker) -> None:
        self.bootstrap = broker.bootstrap

    async def topics(self, names: list[str], *, partitions: int = 1) -> None:
        await ensure_topics(self.bootstrap, names, partitions=partitions)

    async def produce(self, topic: str, items: list[tuple[str | None, bytes | None]]) -> None:
        await produce(self.bootstrap, topic, items)  # type: ignore[arg-type]

    def consumer_factory(self, topics: list[str], group: str) -> ConsumerFactory:
        make: Callable[[], Any] = lambda: make_consumer(self.bootstrap, topics, group_id=group)  # noqa: E731
        return make

    async def producer(self) -> Publisher:
        return await EventProducer.start(self.bootstrap)

    async def close_producer(self, producer: Publisher) -> None:
        assert isinstance(producer, EventProducer)
        await producer.stop()

    async def committed(self, group: str, topic: str) -> int:
        return await committed(self.bootstrap, group, topic)

    async def read(self, topic: str) -> list[Any]:
        return await read_all(self.bootstrap, topic)
