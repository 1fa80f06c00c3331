"""Re-delivery is harmless in risk and alerting: the same input twice gives one event, one warning
version and one delivery per recipient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from services.alerting.app import MIGRATIONS as ALERTING
from services.alerting.settings import AlertingSettings
from services.ingest.app import MIGRATIONS as INGEST
from services.risk.adapters.stations import StationPlans
from services.risk.app import MIGRATIONS as RISK
from services.risk.workers.consumer import RiskHandler
from shared.clock import SystemClock
from shared.contracts import Reading, Topics
from shared.db import create_pool, migrate
from shared.kafka import EventProducer, Message, dead_letter
from shared.outbox import OutboxRelay
from tests.factories import Alerting, alerting
from tests.kafka_util import read_all

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def reading_msg(offset: int, value: float, minutes: int, partition: int = 0) -> Message:
    ev = Reading(
        event_id=f"r{minutes}",
        produced_at=T0,
        station_id="WL1",
        region_code="110101001001",
        station_kind="water_level",
        metric="water_level",
        ts=T0 + timedelta(minutes=minutes),
        value=value,
        unit="m",
        source="feed",
    )
    return Message(
        "readings.v1", partition, offset, b"WL1", orjson.dumps(ev.model_dump(mode="json"))
    )


async def test_risk_applies_a_redelivered_batch_once(database, broker, topic_prefix):
    pool = await create_pool(database)
    producer = await EventProducer.start(broker.bootstrap)
    try:
        await migrate(pool, "ingest", INGEST, storage="native")
        await migrate(pool, "risk", RISK)
        await pool.execute(
            """INSERT INTO ingest.stations (id, name, kind, region_code, attributes)
               VALUES ('WL1', 'w', 'water_level', '110101001001', $1)""",
            {"thresholds": {"water_level": {"blue": 3, "red": 4.5}}},
        )
        topics = Topics(topic_prefix)
        relay = OutboxRelay(pool, "risk", producer)
        handler = RiskHandler(
            pool=pool, plans=StationPlans(pool), relay=relay, topics=topics, clock=SystemClock()
        )
        batch = [reading_msg(0, 2.0, 0), reading_msg(1, 4.6, 5), reading_msg(2, 3.2, 10)]
        await handler.process(batch)
        await handler.process(batch)  # re-delivered after a crash before the commit
        # the same reading published again by ingest, at a new offset
        await handler.process([reading_msg(3, 4.6, 5)])
        rows = await pool.fetch("SELECT payload FROM risk.outbox ORDER BY seq")
        station = [r["payload"] for r in rows if r["payload"]["scope"] == "station"]
        region = [r["payload"] for r in rows if r["payload"]["scope"] == "region"]
        assert [(p["previous_level"], p["level"]) for p in station] == [
            ("none", "red"),
            ("red", "blue"),
        ]
        # regions are judged at the end of each batch: the village, township and county went
        # none → blue once (the red came and went inside the first batch), and not again
        assert sorted((p["region_code"], p["previous_level"], p["level"]) for p in region) == [
            ("110101000000", "none", "blue"),
            ("110101001000", "none", "blue"),
            ("110101001001", "none", "blue"),
        ]
        assert await relay.relay_once() == len(rows)
        assert await relay.relay_once() == 0
        published = await read_all(broker.bootstrap, topics.risk_events)
        assert [p["level"] for p in published if p["scope"] == "station"] == ["red", "blue"]
        state = await pool.fetchrow("SELECT level, last_value FROM risk.rule_state")
        assert (state["level"], state["last_value"]) == (1, 3.2)
        await no_value_is_dead_lettered(handler, "readings.v1")
    finally:
        await producer.stop()
        await pool.close()


async def no_value_is_dead_lettered(handler: RiskHandler | Alerting, topic: str) -> None:
    """A tombstone (no value) beside a good message is dead-lettered with its reason, and its
    dead letter can be written (an empty payload)."""
    tombstone = Message(topic, 0, 99, b"WL1", None)
    result = await handler.process([tombstone])
    assert [(d.kafka_message.offset, d.reason) for d in result.dead_letters] == [(99, "no_value")]
    letter = dead_letter(result.dead_letters[0], service="test", clock=SystemClock())
    assert (letter.payload, letter.key, letter.reason) == ("", "WL1", "no_value")


def risk_msg(offset: int, level: str, previous: str, minutes: int) -> Message:
    doc = {
        "event_id": f"ev-{offset}",
        "produced_at": T0.isoformat(),
        "scope": "station",
        "station_id": "WL1",
        "region_code": "110101001001",
        "hazard": "flood",
        "rule_id": "threshold:water_level",
        "previous_level": previous,
        "level": level,
        "change": "raised",
        "event_time": (T0 + timedelta(minutes=minutes)).isoformat(),
        "evidence": {"rule_id": "threshold:water_level", "metric": "water_level", "value": 5.0},
    }
    return Message("risk.events.v1", 0, offset, b"WL1", orjson.dumps(doc))


async def test_alerting_applies_a_redelivered_event_once(database, topic_prefix):
    pool = await create_pool(database)
    try:
        await migrate(pool, "alerting", ALERTING)
        await pool.execute(
            """INSERT INTO alerting.subscriptions (name, channel, target, region_prefix)
               VALUES ('duty', 'webhook', 'http://127.0.0.1:9/hook', '110101')"""
        )
        woken = []
        handler = alerting(
            pool,
            topics=Topics(topic_prefix),
            clock=SystemClock(),
            settings=AlertingSettings(group_interval_s=0),
            on_new_deliveries=lambda: woken.append(1),
        )
        raise_red = risk_msg(0, "red", "none", 0)
        clear = risk_msg(1, "none", "red", 30)
        await handler.process([raise_red])
        await handler.process([raise_red])
        await handler.process([raise_red, clear])
        versions = await pool.fetch(
            "SELECT msg_type, level FROM alerting.warning_versions ORDER BY version"
        )
        assert [(v["msg_type"], v["level"]) for v in versions] == [("Alert", 4), ("Cancel", 4)]
        deliveries = await pool.fetch(
            "SELECT version, channel FROM alerting.deliveries ORDER BY version, channel"
        )
        assert [(d["version"], d["channel"]) for d in deliveries] == [
            (1, "kafka"),
            (1, "webhook"),
            (2, "kafka"),
            (2, "webhook"),
        ]
        w = await pool.fetchrow("SELECT state FROM alerting.warnings")
        assert w["state"] == "cancelled"
        refs = await pool.fetchval("SELECT refs FROM alerting.warning_versions WHERE version = 2")
        assert len(refs) == 1
        assert refs[0].startswith("11010100000000,11010100000000_")  # a 14-digit sender code
        await no_value_is_dead_lettered(handler, "risk.events.v1")
    finally:
        await pool.close()
