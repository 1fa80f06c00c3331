"""The consumer's records as the fetcher builds them (:func:`shared.kafka.use_message_records`),
read from the real broker: every field that aiokafka's own ``ConsumerRecord`` carries comes
through, under the same names, and a consumer with deserializers still gets aiokafka's records."""

from __future__ import annotations

import time
import uuid

import aiokafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from shared.devstack.broker import TansuBroker
from shared.kafka import EventProducer, Message, _messages, ensure_topics, use_message_records

HEADERS = [("trace", b"abc"), ("origin", b"\x00\x01")]


async def _produce(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, b'{"n":1}', key=b"ST1", partition=0, timestamp_ms=1_700_000_000_123
        )
        await producer.send_and_wait(
            topic,
            b'{"n":2}',
            key=None,
            partition=0,
            timestamp_ms=1_700_000_000_456,
            headers=HEADERS,
        )
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, **kwargs: object) -> list[object]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        **kwargs,  # type: ignore[arg-type]
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        out: list[object] = []
        while len(out) < 2:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def test_the_fetcher_makes_messages_with_every_field(broker: TansuBroker) -> None:
    topic = f"rec{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [topic], partitions=1)
    await _produce(broker.bootstrap, topic)
    assert use_message_records()  # the release this project is tested with

    first, second = await _consume(broker.bootstrap, topic)

    assert type(first) is Message
    assert type(second) is Message
    assert first == Message(topic, 0, 0, b"ST1", b'{"n":1}', 1_700_000_000_123, 0, ())
    assert second == Message(topic, 0, 1, None, b'{"n":2}', 1_700_000_000_456, 0, tuple(HEADERS))
    # the names aiokafka's records answer to
    assert (second.timestamp, second.serialized_key_size, second.serialized_value_size) == (
        1_700_000_000_456,
        -1,
        7,
    )
    assert first.serialized_key_size == 3
    assert first.checksum is None
    # the runner takes them as they come
    assert _messages({TopicPartition(topic, 0): [first, second]}) == [first, second]


async def test_deserializers_still_get_aiokafkas_records(broker: TansuBroker) -> None:
    topic = f"rec{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [topic], partitions=1)
    await _produce(broker.bootstrap, topic)
    use_message_records()

    first, second = await _consume(broker.bootstrap, topic, value_deserializer=bytes.decode)

    assert isinstance(first, ConsumerRecord)
    assert isinstance(second, ConsumerRecord)
    assert (first.value, second.value) == ('{"n":1}', '{"n":2}')
    assert list(second.headers) == HEADERS
    # and the runner converts such records into the same messages
    assert _messages({TopicPartition(topic, 0): [second]}) == [
        Message(topic, 0, 1, None, '{"n":2}', 1_700_000_000_456, 0, tuple(HEADERS))  # type: ignore[arg-type]
    ]


def test_not_installed_on_an_untested_release() -> None:
    assert not use_message_records("0.99.0")
    assert use_message_records(aiokafka.__version__)


@pytest.mark.parametrize("ready", [True, False], ids=["ready-batches", "aiokafka-builder"])
async def test_send_many_places_each_key_where_the_partitioner_does(
    broker: TansuBroker, ready: bool
) -> None:
    """Whole record batches (shared._records) or aiokafka's builder: the same messages land
    in the same partitions in the same order, keyed or not, with a timestamp of now."""
    topic = f"rec{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [topic], partitions=3)
    producer = await EventProducer.start(broker.bootstrap, ready_batches=ready)
    assert (producer._records is not None) is ready
    before = int(time.time() * 1000)
    try:
        items: list[tuple[str | bytes | None, bytes]] = []
        for i in range(60):
            key = f"S{i % 12}"
            items.append((key if i % 2 else key.encode(), f"{key}:{i}".encode()))
        items += [(None, b"keyless:1"), (None, b"keyless:2")]
        await producer.send_many(topic, items)
        await producer.send_many(topic, [])  # nothing to send: no request at all
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[Message] = []
        while len(got) < len(items):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(records)
    finally:
        await consumer.stop()

    partitioner = DefaultPartitioner()
    by_key: dict[bytes, list[bytes]] = {}
    for m in got:
        if m.key is None:
            continue
        assert m.partition == partitioner(m.key, [0, 1, 2], [0, 1, 2])
        by_key.setdefault(m.key, []).append(m.value)
    assert len(by_key) == 12
    for key, values in by_key.items():  # str and bytes keys alike, in the order given
        assert values == [v for k, v in items if k in (key, key.decode())]
    assert sorted(m.value for m in got if m.key is None) == [b"keyless:1", b"keyless:2"]
    assert all(before - 1000 <= m.timestamp <= time.time() * 1000 + 1000 for m in got)
    assert len(got) == len(items)
