"""Group timers, flapping, inhibition and reminders in the alerting consumer, on the real
database with a manual clock: what reaches the ledger, and when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from services.alerting.app import MIGRATIONS
from services.alerting.settings import AlertingSettings
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.kafka import Message
from tests.factories import Alerting, add_person, alerting

T0 = datetime(2026, 7, 1, 8, tzinfo=UTC)


class Feed:
    def __init__(self, handler: Alerting, clock: ManualClock, prefix: str) -> None:
        self.handler, self.clock, self.n = handler, clock, 0
        self.topic = Topics(prefix).risk_events

    async def event(self, station: str, level: str, hazard: str = "rainstorm") -> None:
        self.n += 1
        doc = {
            "event_id": f"ev-{self.n}",
            "produced_at": self.clock.now().isoformat(),
            "scope": "station",
            "station_id": station,
            "region_code": "110101001001",
            "hazard": hazard,
            "rule_id": f"threshold:{hazard}",
            "previous_level": "none",
            "level": level,
            "change": "raised",
            "event_time": self.clock.now().isoformat(),
            "evidence": {"rule_id": f"threshold:{hazard}", "metric": "m", "value": 1},
        }
        await self.handler.process(
            [Message(self.topic, 0, self.n, station.encode(), orjson.dumps(doc))]
        )


async def sent(pool: Any) -> list[tuple[str, int, str]]:
    """(hazard, version, msg type) of each version that reached a person, in order."""
    rows = await pool.fetch(
        """SELECT w.hazard, d.version, v.msg_type, d.purpose FROM alerting.deliveries d
             JOIN alerting.warnings w ON w.id = d.warning_id
             JOIN alerting.warning_versions v ON v.warning_id = d.warning_id
                                            AND v.version = d.version
            WHERE d.recipient LIKE 'person:%' ORDER BY d.id"""
    )
    return [
        (r["hazard"], r["version"], r["msg_type"] + ("*" if r["purpose"] == "reminder" else ""))
        for r in rows
    ]


async def make(database: str, prefix: str, **kw: Any) -> tuple[Any, Alerting, Feed]:
    pool = await create_pool(database)
    await migrate(pool, "alerting", MIGRATIONS)
    await add_person(pool, name="村干部", phone="13300000001")
    clock = ManualClock(T0)
    handler = alerting(pool, topics=Topics(prefix), clock=clock, settings=AlertingSettings(**kw))
    return pool, handler, Feed(handler, clock, prefix)


async def test_group_wait_interval_and_raises(database, topic_prefix):
    pool, handler, feed = await make(
        database, topic_prefix, group_wait_s=30, group_interval_s=300, flap_threshold=10
    )
    try:
        await feed.event("RG1", "yellow")
        await feed.event("RG2", "yellow")  # the same storm, inside group_wait: no new version
        assert await sent(pool) == []
        feed.clock.advance(30)
        assert await handler.dispatch_due() == 1
        assert await sent(pool) == [("rainstorm", 1, "Alert")]
        # a raise goes out at once
        feed.clock.advance(10)
        await feed.event("RG1", "red")
        assert await sent(pool) == [("rainstorm", 1, "Alert"), ("rainstorm", 2, "Update")]
        # lowering waits the group interval; a further change inside it supersedes it
        feed.clock.advance(10)
        await feed.event("RG1", "orange")
        feed.clock.advance(10)
        await feed.event("RG1", "yellow")
        assert await handler.dispatch_due() == 0
        assert len(await sent(pool)) == 2
        feed.clock.advance(300)
        assert await handler.dispatch_due() == 1
        assert await sent(pool) == [
            ("rainstorm", 1, "Alert"),
            ("rainstorm", 2, "Update"),
            ("rainstorm", 4, "Update"),  # version 3 was superseded before it went out
        ]
        states = await pool.fetch(
            "SELECT version, dispatch FROM alerting.warning_versions ORDER BY version"
        )
        assert [r["dispatch"] for r in states] == [
            "dispatched",
            "dispatched",
            "superseded",
            "dispatched",
        ]
    finally:
        await pool.close()


async def test_flapping_withdraws_the_held_all_clear(database, topic_prefix):
    pool, handler, feed = await make(
        database, topic_prefix, group_interval_s=0, flap_threshold=3, flap_hold_s=600
    )
    try:
        await feed.event("RG1", "orange")  # Alert
        feed.clock.advance(60)
        await feed.event("RG1", "none")  # Cancel, out at once (2 versions in the window)
        feed.clock.advance(60)
        await feed.event("RG1", "orange")  # a new warning
        feed.clock.advance(60)
        await feed.event("RG1", "none")  # flapping now: the all-clear is held
        assert [m for _, _, m in await sent(pool)] == ["Alert", "Cancel", "Alert"]
        feed.clock.advance(60)
        await feed.event("RG1", "orange")  # back within the hold: the all-clear is withdrawn
        feed.clock.advance(900)
        await handler.dispatch_due()
        assert [m for _, _, m in await sent(pool)] == ["Alert", "Cancel", "Alert"]
        open_ = await pool.fetch("SELECT state, version FROM alerting.warnings ORDER BY created_at")
        assert [(r["state"], r["version"]) for r in open_] == [("cancelled", 2), ("issued", 1)]
        withdrawn = await pool.fetchval(
            "SELECT count(*) FROM alerting.audit_log WHERE action = 'cancel.withdrawn'"
        )
        assert withdrawn == 1
        # stable again: the all-clear goes out after the hold
        feed.clock.advance(60)
        await feed.event("RG1", "none")
        feed.clock.advance(601)
        assert await handler.dispatch_due() == 1
        assert [m for _, _, m in await sent(pool)] == ["Alert", "Cancel", "Alert", "Cancel"]
    finally:
        await pool.close()


async def test_inhibition_and_release(database, topic_prefix):
    pool, handler, feed = await make(database, topic_prefix, group_interval_s=0)
    try:
        await feed.event("WL1", "red", hazard="flood")
        await feed.event("RG1", "blue")  # rainstorm blue under a red flood warning: muted
        assert await sent(pool) == [("flood", 1, "Alert")]
        held = await pool.fetchval(
            """SELECT v.dispatch FROM alerting.warning_versions v
                 JOIN alerting.warnings w ON w.id = v.warning_id WHERE w.hazard = 'rainstorm'"""
        )
        assert held == "inhibited"
        assert await handler.release_silenced() == 0
        await feed.event("WL1", "none", hazard="flood")  # the flood warning ends
        assert await handler.release_silenced() == 1
        assert await sent(pool) == [
            ("flood", 1, "Alert"),
            ("flood", 2, "Cancel"),
            ("rainstorm", 1, "Alert"),
        ]
    finally:
        await pool.close()


async def test_reminders_repeat_open_warnings(database, topic_prefix):
    pool, handler, feed = await make(
        database, topic_prefix, group_interval_s=0, repeat_interval_s=3600
    )
    try:
        await feed.event("RG1", "orange")
        feed.clock.advance(3599)
        assert await handler.remind() == 0
        feed.clock.advance(1)
        assert await handler.remind() == 1
        assert await handler.remind() == 0
        feed.clock.advance(3600)
        assert await handler.remind() == 1
        assert [m for _, _, m in await sent(pool)] == ["Alert", "Alert*", "Alert*"]
        msg = await pool.fetchval(
            "SELECT message FROM alerting.deliveries WHERE purpose = 'reminder' LIMIT 1"
        )
        assert msg.startswith("【持续】")
        await feed.event("RG1", "none")
        feed.clock.advance(7200)
        assert await handler.remind() == 0  # a closed warning is not repeated
    finally:
        await pool.close()


async def test_storm_mode_holds_the_chatter_and_sends_one_digest(database, topic_prefix):
    pool, handler, feed = await make(
        database, topic_prefix, group_interval_s=0, flap_threshold=100, storm_limit=2
    )
    try:
        # four hazards in a storm, blue and yellow: the third and fourth message wait
        for hazard in ("rainstorm", "gale", "heat", "forest_fire"):
            await feed.event("S-" + hazard, "blue", hazard=hazard)
            feed.clock.advance(60)
        rows = await pool.fetch(
            """SELECT d.state, w.hazard FROM alerting.deliveries d
                 JOIN alerting.warnings w ON w.id = d.warning_id
                WHERE d.recipient LIKE 'person:%' ORDER BY d.id"""
        )
        assert [(r["hazard"], r["state"]) for r in rows] == [
            ("rainstorm", "pending"),
            ("gale", "pending"),
            ("heat", "held"),
            ("forest_fire", "held"),
        ]
        # a red warning is never held
        await feed.event("S-flood", "red", hazard="flood")
        assert (
            await pool.fetchval(
                """SELECT d.state FROM alerting.deliveries d JOIN alerting.warnings w
                 ON w.id = d.warning_id WHERE w.hazard = 'flood' AND d.recipient LIKE 'person:%'"""
            )
            == "pending"
        )
        # within the window nothing more goes; after it, one digest for the two held
        assert await handler.send_digests() == 0
        feed.clock.advance(3600)
        assert await handler.send_digests() == 1
        assert await handler.send_digests() == 0
        digest = await pool.fetchrow(
            "SELECT message, state FROM alerting.deliveries WHERE purpose = 'digest'"
        )
        assert digest["state"] == "pending"
        assert digest["message"].startswith("【汇总】您有2条预警信息：")
        assert "高温" in digest["message"]
        assert "森林火险" in digest["message"]
        held = await pool.fetchval("SELECT count(*) FROM alerting.deliveries WHERE state = 'held'")
        assert held == 0
    finally:
        await pool.close()
