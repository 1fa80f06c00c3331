"""Replaying a dead-letter topic: once the cause is fixed (a station registered, a rule loaded),
the dead letters matching a reason are published again, unchanged, to the topic they came from.

Every consumer de-duplicates by event id, so replaying a message that did get through after all,
or replaying twice, changes nothing. A payload that was not valid UTF-8 was stored with escapes
and cannot be restored byte for byte: it is counted and left alone.

    qianshao dlq replay --bootstrap HOST:PORT --topic readings.dlq.v1 --reason unknown_station
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from shared.contracts import DeadLetter
from shared.kafka import EventProducer


@dataclass
class ReplayReport:
    read: int = 0
    matched: int = 0
    replayed: int = 0
    unreadable: int = 0
    not_utf8: int = 0
    # dead letters of a field protocol (an SL 651 frame …): no Kafka message to publish again
    not_messages: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


def wants(d: DeadLetter, *, reason: str | None, since: datetime | None) -> bool:
    return (reason is None or d.reason == reason) and (since is None or d.failed_at >= since)


async def replay(
    bootstrap: str,
    dlq_topic: str,
    *,
    reason: str | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Reads ``dlq_topic`` from its start to its current end; republishes the matches.
    ``progress(read, matched)`` is told after every fetch."""
    report = ReplayReport()
    matches: list[DeadLetter] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # the cluster's metadata, so that the topic's partitions are known
        parts = consumer.partitions_for_topic(dlq_topic) or set()
        tps = [TopicPartition(dlq_topic, p) for p in sorted(parts)]
        if tps:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            # read until the topic has been quiet for a second: the end offsets a broker
            # reports are not relied on (the local one under-reports them for batches)
            quiet = 0
            while quiet < 2:
                batch = await consumer.getmany(timeout_ms=500)
                if not any(batch.values()):
                    quiet += 1
                    continue
                quiet = 0
                for msgs in batch.values():
                    for m in msgs:
                        report.read += 1
                        try:
                            d = DeadLetter.model_validate_json(m.value)
                        except ValidationError:
                            report.unreadable += 1
                            continue
                        report.by_reason[d.reason] = report.by_reason.get(d.reason, 0) + 1
                        if wants(d, reason=reason, since=since):
                            matches.append(d)
                if progress is not None:
                    progress(report.read, len(matches))
    finally:
        await consumer.stop()
    report.matched = len(matches)
    if dry_run or not matches:
        return report
    by_topic: dict[str, list[tuple[str | None, bytes]]] = {}
    for d in matches:
        if d.partition < 0:
            report.not_messages += 1
            continue
        if "\\x" in d.payload:
            report.not_utf8 += 1
            continue
        by_topic.setdefault(d.topic, []).append((d.key, d.payload.encode()))
    producer = await EventProducer.start(bootstrap, client_id="qianshao-dlq-replay")
    try:
        for topic, items in by_topic.items():  # each topic's in their order, acknowledged
            await producer.send_many(topic, items)
            report.replayed += len(items)
    finally:
        await producer.stop()
    return report
