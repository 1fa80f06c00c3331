"""Replaying a dead-letter topic on the real broker: the matches go back to their topic
unchanged (key and value), the rest stay; a dry run publishes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from shared.contracts import DeadLetter
from shared.dlq import replay
from tests.kafka_util import produce, read_all

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def dead(topic: str, n: int, reason: str, at: datetime, payload: str) -> bytes:
    return orjson.dumps(
        DeadLetter(
            topic=topic,
            partition=0,
            offset=n,
            key=f"S{n}",
            payload=payload,
            reason=reason,
            detail="…",
            service="ingest",
            failed_at=at,
        ).model_dump(mode="json")
    )


async def test_replay_by_reason_and_time(broker, topic_prefix):
    source = f"{topic_prefix}obs.sensor.v1"
    dlq = f"{source}.dlq"
    readings = [
        orjson.dumps({"station_id": f"S{i}", "value": i, "note": "雨量"}).decode() for i in range(4)
    ]
    await produce(
        broker.bootstrap,
        dlq,
        [
            ("S0", dead(source, 0, "unknown_station", T0, readings[0])),
            ("S1", dead(source, 1, "invalid_json", T0, "{not json")),
            ("S2", dead(source, 2, "unknown_station", T0 + timedelta(hours=2), readings[2])),
            ("S3", dead(source, 3, "unknown_station", T0 + timedelta(hours=3), "bad \\xff byte")),
            (None, b"not a dead letter"),
        ],
    )
    dry = await replay(broker.bootstrap, dlq, reason="unknown_station", dry_run=True)
    assert (dry.read, dry.matched, dry.replayed, dry.unreadable) == (5, 3, 0, 1)
    assert dry.by_reason == {"unknown_station": 3, "invalid_json": 1}
    assert await read_all(broker.bootstrap, source) == []

    report = await replay(
        broker.bootstrap, dlq, reason="unknown_station", since=T0 + timedelta(hours=1)
    )
    # S2 goes back as it was; S3's payload was not UTF-8 and cannot be restored
    assert (report.matched, report.replayed, report.not_utf8) == (2, 1, 1)
    assert await read_all(broker.bootstrap, source) == [orjson.loads(readings[2])]
