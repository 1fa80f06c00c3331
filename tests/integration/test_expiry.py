"""Warning expiry on the real database with a manual clock: a warning risk keeps re-announcing is
renewed (an Update at the same level, with a new CAP expires) before it runs out; one risk no
longer backs is expired when it runs out, its duty officers told; while risk itself is silent
nothing is decided either way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.alerting.adapters.publications import request_publication
from services.alerting.adapters.versions import load_versions
from services.alerting.app import MIGRATIONS
from services.alerting.settings import AlertingSettings
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.kafka import Message
from tests.factories import COUNTY, TOWNSHIP, Alerting, add_person, alerting, duty

T0 = datetime(2026, 7, 1, 8, tzinfo=UTC)
VILLAGE = "110101001001"


class Risk:
    """What risk would publish, at the manual clock's time."""

    def __init__(self, handler: Alerting, clock: ManualClock, prefix: str) -> None:
        self.handler, self.clock, self.n = handler, clock, 0
        self.topic = Topics(prefix).risk_events

    async def send(self, docs: list[dict[str, Any]]) -> None:
        msgs = []
        for doc in docs:
            self.n += 1
            msgs.append(
                Message(self.topic, 0, self.n, doc["region_code"].encode(), orjson.dumps(doc))
            )
        await self.handler.process(msgs)

    def doc(
        self, level: str, change: str, *, station: str | None = "RG1", rule: str = "threshold:rain"
    ) -> dict[str, Any]:
        now = self.clock.now().isoformat()
        return {
            "event_id": uuid.uuid4().hex,
            "produced_at": now,
            "scope": "station" if station else "region",
            "station_id": station,
            "region_code": VILLAGE if station else "110101000000",
            "hazard": "rainstorm",
            "rule_id": rule if station else "rollup:county",
            "previous_level": level if change == "standing" else "none",
            "level": level,
            "change": change,
            "event_time": now,
            "evidence": {"rule_id": "threshold:rain", "metric": "rainfall", "value": 60},
        }

    async def raise_(self, level: str) -> None:
        await self.send([self.doc(level, "raised")])

    async def stands(self, *, station: bool = True) -> None:
        """One standing announcement: the station's level (if it still stands) and the county."""
        docs = [self.doc("orange", "standing", station=None)]
        if station:
            docs.append(self.doc("orange", "standing"))
        await self.send(docs)


async def make(database: str, prefix: str) -> tuple[Any, Alerting, Risk]:
    pool = await create_pool(database)
    await migrate(pool, "alerting", MIGRATIONS)
    await add_person(pool, name="村干部", phone="13300000001")
    # the two officers on duty now; the fourth is off
    for name, role, phone, on_duty in (
        ("镇值班员", "township_duty_officer", "13300000002", True),
        ("县值班员", "county_duty_officer", "13300000003", True),
        ("休班员", "county_duty_officer", "13300000004", False),
    ):
        region = TOWNSHIP if role.startswith("township") else COUNTY
        await add_person(
            pool,
            name=name,
            role=role,
            region_code=region,
            phone=phone,
            on_duty=duty(T0) if on_duty else None,
        )
    clock = ManualClock(T0)
    settings = AlertingSettings(
        warning_validity_s=3600,
        renew_ahead_s=600,
        evidence_timeout_s=900,
        group_interval_s=0,
        repeat_interval_s=0,
    )
    handler = alerting(pool, topics=Topics(prefix), clock=clock, settings=settings)
    return pool, handler, Risk(handler, clock, prefix)


async def state(pool: Any) -> tuple[str, int, datetime | None]:
    w = await pool.fetchrow("SELECT state, version, expires_at FROM alerting.warnings")
    return w["state"], w["version"], w["expires_at"]


async def test_a_backed_warning_is_renewed_and_a_lapsed_one_expires(database, topic_prefix):
    pool, handler, risk = await make(database, topic_prefix)
    try:
        await risk.raise_("orange")
        assert await state(pool) == ("issued", 1, T0 + timedelta(hours=1))
        # risk re-announces every 5 minutes; nothing to do until 10 minutes before expiry
        for _ in range(9):
            risk.clock.advance(300)
            await risk.stands()
            assert await handler.expire_due() == {"renew": 0, "expire": 0, "hold": 0}
        risk.clock.advance(360)  # T0 + 51 min: inside renew_ahead, and the level still stands
        assert await handler.expire_due() == {"renew": 1, "expire": 0, "hold": 0}
        renewed_at = risk.clock.now()
        assert await state(pool) == ("updated", 2, renewed_at + timedelta(hours=1))
        assert await handler.expire_due() == {"renew": 0, "expire": 0, "hold": 0}  # once
        v = await pool.fetchrow(
            """SELECT msg_type, level, headline, refs, expires, station_ids
                 FROM alerting.warning_versions WHERE version = 2"""
        )
        assert (v["msg_type"], v["level"], v["station_ids"]) == ("Update", 3, ["RG1"])
        assert "继续发布" in v["headline"]
        assert len(v["refs"]) == 1
        assert v["expires"] == renewed_at + timedelta(hours=1)
        wid = await pool.fetchval("SELECT id FROM alerting.warnings")
        alert = (await load_versions(pool, {(wid, 2)}))[(wid, 2)]  # as alerts.v1 carries it
        assert alert.expires == renewed_at + timedelta(hours=1)
        # the renewal reached the village cadre like any version
        got = await pool.fetch(
            """SELECT version, purpose FROM alerting.deliveries
                WHERE recipient LIKE 'person:%' AND target = '13300000001' ORDER BY id"""
        )
        assert [(r["version"], r["purpose"]) for r in got] == [(1, "warning"), (2, "warning")]

        # a broadcast of the renewal is waiting for its approver
        async with pool.acquire() as conn:
            pending = await request_publication(
                conn,
                warning_id=wid,
                requested_by="duty",
                now=risk.clock.now(),
                approval_levels=("orange", "red"),
            )
        assert pending["state"] == "pending_approval"

        # the station's rule is dropped: risk goes on (county announcements), the station not
        for _ in range(12):
            risk.clock.advance(300)
            await risk.stands(station=False)
            decided = await handler.expire_due()
            assert decided["renew"] == 0
            if risk.clock.now() < renewed_at + timedelta(hours=1):
                assert decided["expire"] == 0
                assert (await state(pool))[0] == "updated"
        assert risk.clock.now() >= renewed_at + timedelta(hours=1)
        st = await state(pool)
        assert st[0] == "expired"
        assert st[1] == 2
        audit = await pool.fetchrow(
            "SELECT actor, detail FROM alerting.audit_log WHERE action = 'expire'"
        )
        assert audit["actor"] == "system:expiry"
        assert audit["detail"]["evidence_at"] == (renewed_at - timedelta(seconds=360)).isoformat()
        told = await pool.fetch(
            "SELECT target, message FROM alerting.deliveries WHERE purpose = 'expiry'"
        )
        # the officers on duty over the village, not the one off duty, not the cadre
        assert sorted(r["target"] for r in told) == ["13300000002", "13300000003"]
        assert all("【预警过期】" in r["message"] and "并非解除" in r["message"] for r in told)
        # the broadcast nobody approved in time will not tell residents of a lapsed warning
        assert await pool.fetchval("SELECT state FROM alerting.publications") == "superseded"
        # a later risk event for the group opens a new warning; the expired one stays closed
        await risk.raise_("yellow")
        states = await pool.fetch("SELECT state FROM alerting.warnings ORDER BY created_at")
        assert [r["state"] for r in states] == ["expired", "issued"]
    finally:
        await pool.close()


async def test_nothing_is_decided_while_risk_is_silent(database, topic_prefix):
    pool, handler, risk = await make(database, topic_prefix)
    try:
        await risk.raise_("orange")
        # risk falls silent: the warning runs out, but no word says whether the level stands
        risk.clock.advance(3 * 3600)
        assert await handler.expire_due() == {"renew": 0, "expire": 0, "hold": 1}
        assert (await state(pool))[:2] == ("issued", 1)
        # alerting hears risk again, its backlog first: the standing level, stated 20 min ago
        # on risk's clock, still counts as evidence (risk's clock, not the wall's, judges it)
        risk.clock.advance(-1200)
        await risk.stands()
        risk.clock.advance(1200)
        assert await handler.expire_due() == {"renew": 0, "expire": 0, "hold": 1}
        # …and now current: the level stands, so the warning is renewed, not expired
        await risk.stands()
        assert await handler.expire_due() == {"renew": 1, "expire": 0, "hold": 0}
        assert (await state(pool))[:2] == ("updated", 2)
    finally:
        await pool.close()


async def test_a_station_stands_at_the_highest_of_its_rules(database, topic_prefix):
    """A rain gauge's observed and forecast rainstorm rules stand each on their own: announcing
    both every period changes nothing, and the warning follows the highest of them."""
    pool, _handler, risk = await make(database, topic_prefix)
    observed, forecast = "cma.rainstorm", "cma.rainstorm_forecast"

    async def send(*docs: tuple[str, str, str]) -> None:
        await risk.send([risk.doc(level, change, rule=rule) for level, change, rule in docs])

    async def versions() -> list[tuple[str, int]]:
        rows = await pool.fetch(
            "SELECT msg_type, level FROM alerting.warning_versions ORDER BY version"
        )
        return [(r["msg_type"], r["level"]) for r in rows]

    try:
        await send(("orange", "raised", observed))
        risk.clock.advance(60)
        await send(("yellow", "raised", forecast))  # lower than the observed: no change
        assert await versions() == [("Alert", 3)]
        for _ in range(4):  # both announced, in either order, period after period
            risk.clock.advance(300)
            await send(("yellow", "standing", forecast), ("orange", "standing", observed))
            risk.clock.advance(300)
            await send(("orange", "standing", observed), ("yellow", "standing", forecast))
        assert await versions() == [("Alert", 3)]
        # the announcements confirmed what the warning holds, set-based: only the two changes
        # went the full path
        assert await pool.fetchval("SELECT count(*) FROM alerting.processed_events") == 2
        seen = await pool.fetch("SELECT rule_id, seen_at FROM alerting.warning_stations")
        assert {r["rule_id"]: r["seen_at"] for r in seen} == {
            observed: risk.clock.now(),
            forecast: risk.clock.now(),
        }
        # a standing announcement older than a change in the same batch is old news
        risk.clock.advance(300)
        await send(("orange", "standing", observed), ("none", "cleared", observed))
        assert await versions() == [("Alert", 3), ("Update", 2)]  # down to the forecast's
        # an announcement of a level alerting does not hold is applied like a change
        risk.clock.advance(300)
        await send(("red", "standing", forecast))
        assert await versions() == [("Alert", 3), ("Update", 2), ("Update", 4)]
        risk.clock.advance(300)
        await send(("none", "cleared", forecast))
        assert [v[0] for v in await versions()][-1] == "Cancel"
    finally:
        await pool.close()
