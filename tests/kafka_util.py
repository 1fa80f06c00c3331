"""Reading and writing test topics on the real broker."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def produce(bootstrap: str, topic: str, items: list[tuple[str | None, bytes]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        futs = [await p.send(topic, v, key=k.encode() if k else None) for k, v in items]
        for f in futs:
            await f
    finally:
        await p.stop()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every message on ``topic`` from the beginning to the current end, decoded as JSON."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        tps = await _partitions(c, topic)
        if not tps:
            return []
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batch = await c.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                out.extend(orjson.loads(m.value) for m in msgs)
                if msgs and msgs[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await c.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await c.stop()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """How many of ``topic``'s messages ``group`` has committed (the sum of its committed
    offsets; the local broker's end offsets are not to be trusted for this)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return sum([(await c.committed(tp)) or 0 for tp in await _partitions(c, topic)])
    finally:
        await c.stop()


async def _partitions(c: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    await c.topics()  # the cluster's metadata, so that the topic's partitions are known
    parts = c.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in parts]
