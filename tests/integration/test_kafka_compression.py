"""The producers' compression on the real broker: every codec's batches are accepted and read
back whole, in order."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka import EventProducer, KafkaConnection, ensure_topics

N = 500
VALUE = b'{"station_id":"B0001","metric":"water_level","value":2.01,"unit":"m"}' * 4


async def _read_back(bootstrap: str, topic: str) -> list[bytes]:
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=1 << 20
    )
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        values: list[bytes] = []
        while len(values) < N:
            for records in (await c.getmany(timeout_ms=1000)).values():
                values.extend(r.value for r in records)
        return values
    finally:
        await c.stop()


@pytest.mark.parametrize("codec", ["none", "gzip", "lz4", "zstd", "snappy"])
async def test_every_codec_is_written_and_read_back_whole(broker, codec):
    topic = f"t{uuid.uuid4().hex[:8]}.{codec}"
    await ensure_topics(broker.bootstrap, [topic], partitions=1)
    producer = await EventProducer.start(KafkaConnection(broker.bootstrap, compression=codec))
    try:
        await producer.send_many(topic, [("B0001", VALUE + str(i).encode()) for i in range(N)])
    finally:
        await producer.stop()
    values = await _read_back(broker.bootstrap, topic)
    assert values == [VALUE + str(i).encode() for i in range(N)]
