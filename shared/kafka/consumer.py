"""The broker's consumer, configured as every Qianshao consumer is: offsets committed by the
runner alone, from the earliest record when the group has none, short fetch waits."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer

from shared.kafka.client import KafkaConnection, connection

# How long the broker may hold a fetch open waiting for data. The local Tansu broker answers a
# fetch only when this runs out (measured: about 200 ms end to end with the 500 ms default, three
# consumer hops), so we keep it short; an idle consumer then polls a few times a second.
FETCH_MAX_WAIT_MS = 50


def make_consumer(
    target: str | KafkaConnection,
    topics: Sequence[str],
    *,
    group_id: str,
    client_id: str = "qianshao",
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        **connection(target).options(),
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
