"""A burst of risk events in one poll is decided in slices, each committed on its own and
waking delivery, so the first warnings leave while later ones are still being decided; a poll
delivered again (a crash before its offsets were committed) changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from services.alerting.app import MIGRATIONS
from services.alerting.settings import AlertingSettings
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.kafka import Message
from tests.factories import alerting

T0 = datetime(2026, 7, 1, 8, tzinfo=UTC)
N = 450


def burst(topic: str) -> list[Message]:
    """N red events, each for a station of its own township (so each opens its own warning)."""
    out = []
    for i in range(N):
        doc = {
            "event_id": f"burst-{i}",
            "produced_at": T0.isoformat(),
            "scope": "station",
            "station_id": f"ST{i}",
            "region_code": f"110101{i:03d}001",
            "hazard": "flood",
            "rule_id": "threshold:level",
            "previous_level": "none",
            "level": "red",
            "change": "raised",
            "event_time": T0.isoformat(),
            "evidence": {"rule_id": "threshold:level", "metric": "level", "value": 9},
        }
        out.append(Message(topic, 0, i, f"ST{i}".encode(), orjson.dumps(doc)))
    return out


async def test_a_burst_is_committed_in_slices_and_a_redelivery_changes_nothing(database):
    pool = await create_pool(database)
    try:
        await migrate(pool, "alerting", MIGRATIONS)
        await pool.execute(
            """INSERT INTO alerting.subscriptions (name, channel, target, region_prefix)
               VALUES ('all', 'webhook', 'http://127.0.0.1:9/hook', '')"""
        )
        wakes: list[int] = []
        prefix = "slices."
        a = alerting(
            pool,
            topics=Topics(prefix),
            clock=ManualClock(T0),
            settings=AlertingSettings(consumer_slice=100, group_wait_s=0, group_interval_s=0),
            on_new_deliveries=lambda: wakes.append(1),
        )
        batch = burst(Topics(prefix).risk_events)
        await a.process(batch)
        # slices of 8, 16, 32, 64, then 100 at most (8+16+32+64+100+100+100+30), each committed
        # and each waking delivery
        assert len(wakes) == 8
        webhook_rows = """SELECT count(*) FROM alerting.deliveries
                           WHERE channel = 'webhook' AND purpose = 'warning'"""
        assert await pool.fetchval("SELECT count(*) FROM alerting.warnings") == N
        assert await pool.fetchval(webhook_rows) == N
        # the whole poll again: every event is known by its id
        await a.process(batch)
        assert len(wakes) == 8
        assert await pool.fetchval("SELECT count(*) FROM alerting.warning_versions") == N
        assert await pool.fetchval(webhook_rows) == N
    finally:
        await pool.close()
