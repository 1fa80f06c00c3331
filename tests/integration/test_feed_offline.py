"""Feeds gone silent, acted on: ``stations.health.v1`` and risk's no-data events go onto the
real broker, the real alerting service consumes them and tells the enterprise's safety officer
(from the 一张图 on PostGIS) and the region's duty officer by SMS through the local provider
stand-ins — once per incident, with an escalation when it lasts and a back-online notice when it
ends; silences, maintenance and storm mode hold what they should. The last test kills alerting
with SIGKILL mid-stream and counts what each person received."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.alerting.app import create_app as alerting_app
from services.ingest.app import ATLAS_MIGRATIONS
from services.ingest.domain.atlas.checks import uscc_check_char
from services.risk.domain.events import nodata_event
from shared.clock import ManualClock
from shared.contracts import StationHealth, Topics, stable_id
from shared.db import Conn, migrate
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import SmsState
from shared.devstack.inprocess import serve
from tests.helpers import eventually
from tests.integration.test_call_confirm import C, T, add_people, admin, settings
from tests.integration.test_fault_alerting import alerting_under_faults
from tests.kafka_util import produce, read_all

ENTERPRISE = "91110101MA01QXK0A" + uscc_check_char("91110101MA01QXK0A")
OTHER = "91110101MA01QXK0B" + uscc_check_char("91110101MA01QXK0B")
S = "13800000009"  # the enterprise's safety officer: in the 一张图, not a registered person
S2 = "13800000019"
VILLAGE = "110101001001"


async def with_atlas(pool: Any) -> None:
    """The 一张图's schema (ingest migrates it; here the test does) and two enterprises."""
    await migrate(pool, "atlas", ATLAS_MIGRATIONS)
    for code, name, phone in ((ENTERPRISE, "示例化工有限公司", S), (OTHER, "示例烟花厂", S2)):
        await pool.execute(
            """INSERT INTO atlas.enterprises
                   (id, name, region_code, geom, sector, monitoring_required,
                    safety_officer_name, safety_officer_phone, row_hash, updated_by)
               VALUES ($1, $2, $3, ST_SetSRID(ST_MakePoint(116.40, 39.91), 4326),
                       'hazchem_production', true, '安全员', $4, 'h', 'test')""",
            code,
            name,
            VILLAGE,
            phone,
        )


def health(
    station: str, online: bool, at: datetime, enterprise: str | None = ENTERPRISE
) -> tuple[str, bytes]:
    seen = at - timedelta(minutes=40) if not online else at
    ev = StationHealth(
        event_id=stable_id("health", station, online, seen.isoformat()),
        produced_at=at,
        station_id=station,
        region_code=VILLAGE,
        owner_enterprise=enterprise,
        online=online,
        last_seen=seen,
        interval_s=600,
    )
    return station, ev.model_dump_json().encode()


def nodata(station: str, silent: bool, at: datetime) -> tuple[str, bytes]:
    seen = (at - timedelta(minutes=40)).timestamp() if silent else at.timestamp()
    ev = nodata_event(station, VILLAGE, seen, silent, at)
    return station, ev.model_dump_json().encode()


def feed_texts(sms: SmsState, mark: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in sms.texts:
        if mark in t["text"]:
            for n in t["numbers"]:
                out[n] = out.get(n, 0) + 1
    return out


async def test_an_offline_enterprise_is_told_once_escalated_and_told_when_it_is_back(
    database, broker, topic_prefix
):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(
            settings(database, broker, topic_prefix, fake, feed_sweep_s=3600), clock=clock
        )
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            pool = app.state.runtime.pool
            await with_atlas(pool)
            await add_people(http, clock)
            topics = Topics(topic_prefix)
            t0 = clock.now()
            # both stations of the enterprise fall silent; risk's no-data says so for one too
            await produce(
                broker.bootstrap,
                topics.station_health,
                [health("EN-1", False, t0), health("EN-2", False, t0)],
            )
            await produce(broker.bootstrap, topics.risk_events, [nodata("EN-1", True, t0)])

            async def told() -> bool:
                return feed_texts(sms, "【监测离线】") == {T: 1, S: 1}

            await eventually(told, what="the township's duty officer and the safety officer told")
            # one text, in one provider request or two (the rows may be claimed apart)
            [text] = {t["text"] for t in sms.texts if "【监测离线】" in t["text"]}
            assert "示例化工有限公司的在线监测" in text
            # it names the stations offline when it was written (the two may come in two polls)
            assert "（EN-1" in text or "（EN-2" in text
            assert await pool.fetchval("SELECT count(*) FROM alerting.feed_incidents") == 1
            await eventually(lambda: _members_offline(pool, 3), what="both stations in it")
            # the village cadres and the county are not told of an offline sensor
            assert set(sms.per_number()) == {T, S}

            # two hours on, still offline: the county's duty officer is told, once
            clock.advance(3600)
            assert await app.state.sweeps.feeds_due() == 0
            clock.advance(3600)
            assert await app.state.sweeps.feeds_due() == 1
            assert await app.state.sweeps.feeds_due() == 0
            await eventually(
                lambda: _async(feed_texts(sms, "【离线升级】") == {C: 1}), what="the escalation"
            )
            assert "已中断2小时" in sms.texts[-1]["text"]

            # health says both are back, but risk still has no data from EN-1: not back yet
            t1 = clock.now()
            await produce(
                broker.bootstrap,
                topics.station_health,
                [health("EN-1", True, t1), health("EN-2", True, t1)],
            )
            await eventually(
                lambda: _members_offline(pool, 1), what="EN-1's no-data still standing"
            )
            assert feed_texts(sms, "【恢复在线】") == {}
            await produce(broker.bootstrap, topics.risk_events, [nodata("EN-1", False, t1)])
            await eventually(
                lambda: _async(feed_texts(sms, "【恢复在线】") == {T: 1, S: 1, C: 1}),
                what="everyone told is told it is back",
            )
            assert "中断2小时" in sms.texts[-1]["text"]

            # the same events again (a replay), then a marker on the same partition: nothing new
            await produce(
                broker.bootstrap,
                topics.station_health,
                [
                    ("replay", health("EN-1", False, t0)[1]),
                    ("replay", health("EN-1", True, t1)[1]),
                    ("replay", health("EN-2", False, t0)[1]),
                    ("replay", health("LONE-1", False, t1, enterprise=None)[1]),
                ],
            )
            await eventually(
                lambda: _async(feed_texts(sms, "【监测离线】") == {T: 2, S: 1}),
                what="the lone station's notice",
            )
            lone = [t for t in sms.texts if "【监测离线】LONE-1" in t["text"]]
            assert len(lone) == 1
            assert lone[0]["numbers"] == [T]
            assert sms.per_number() == {T: 3, S: 2, C: 2}
            rows = await pool.fetch(
                """SELECT warning_id, version, recipient, state FROM alerting.deliveries
                    WHERE purpose = 'feed' ORDER BY warning_id, version, recipient"""
            )
            assert len(rows) == 7
            assert {r["recipient"] for r in rows if r["recipient"].startswith("enterprise:")} == {
                f"enterprise:{ENTERPRISE}"
            }
            trail = await pool.fetch(
                "SELECT action FROM alerting.audit_log WHERE warning_id = 'feed:1' ORDER BY id"
            )
            actions = [r["action"] for r in trail]
            assert actions[0] == "feed.offline"
            assert "feed.escalated" in actions
            assert actions[-1] == "feed.notice.back"


async def test_silences_maintenance_and_storm_mode_hold_what_they_should(
    database, broker, topic_prefix
):
    clock = ManualClock(datetime.now(UTC))
    sms = SmsState()
    async with serve(fake_app(sms=sms)) as fake:
        app = alerting_app(
            settings(database, broker, topic_prefix, fake, feed_sweep_s=3600, storm_limit=1),
            clock=clock,
        )
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            pool = app.state.runtime.pool
            await with_atlas(pool)
            await add_people(http, clock)
            topics = Topics(topic_prefix)
            # a silence on the township's feed notices, and a station in maintenance
            r = await http.post(
                "/v1/silences",
                json={
                    "region_prefix": "110101001",
                    "hazard": "feed_offline",
                    "ends_at": (clock.now() + timedelta(minutes=30)).isoformat(),
                    "reason": "通信线路施工",
                },
                headers=admin(clock),
            )
            assert r.status_code == 201, r.text
            r = await http.put(
                "/v1/stations/MT-1/maintenance",
                json={"ends_at": (clock.now() + timedelta(hours=1)).isoformat(), "reason": "校准"},
                headers=admin(clock),
            )
            assert r.status_code == 200, r.text
            t0 = clock.now()
            await produce(
                broker.bootstrap,
                topics.station_health,
                [
                    ("k", b'{"station_id": "EN-1", "online": "perhaps"}'),
                    ("k", health("MT-1", False, t0, enterprise=None)[1]),
                    ("k", health("EN-1", False, t0)[1]),
                ],
            )

            async def held() -> bool:
                by = await pool.fetchval("SELECT held_by FROM alerting.feed_incidents")
                return by is not None and by.startswith("silence:")

            await eventually(held, what="the offline notice held by the silence")
            # the station in maintenance opened nothing
            assert await pool.fetchval("SELECT count(*) FROM alerting.feed_incidents") == 1
            assert await app.state.sweeps.feeds_due() == 0
            assert sms.per_number() == {}
            # what could not be read is on the dead-letter topic, saying why
            [dead] = await read_all(broker.bootstrap, f"{topics.station_health}.dlq")
            assert dead["reason"] == "invalid_station_health"
            assert "online" in dead["detail"]

            # the silence ends with the enterprise still offline: the notice goes then
            clock.advance(31 * 60)
            assert await app.state.sweeps.feeds_due() == 2
            await eventually(
                lambda: _async(feed_texts(sms, "【监测离线】") == {T: 1, S: 1}),
                what="the notice after the silence",
            )
            # storm mode (limit 1 an hour): the township officer's next notice waits for the
            # digest; the safety officer of the other enterprise is told at once
            await produce(
                broker.bootstrap, topics.station_health, [health("FW-1", False, t0, OTHER)]
            )
            await eventually(
                lambda: _async(feed_texts(sms, "【监测离线】") == {T: 1, S: 1, S2: 1}),
                what="the other enterprise's safety officer told",
            )
            states = await pool.fetch(
                """SELECT recipient, state FROM alerting.deliveries
                    WHERE warning_id = 'feed:2' ORDER BY recipient"""
            )
            assert [(r["recipient"].split(":")[0], r["state"]) for r in states] == [
                ("enterprise", "sent"),
                ("person", "held"),
            ]
            clock.advance(3601)
            assert await app.state.sweeps.send_digests() == 1
            await eventually(
                lambda: _async(any("【汇总】" in t["text"] for t in sms.texts)), what="the digest"
            )
            digest = next(t for t in sms.texts if "【汇总】" in t["text"])
            assert digest["numbers"] == [T]
            assert "示例烟花厂在线监测离线" in digest["text"]


async def test_an_offline_feed_across_kills_of_alerting_tells_each_person_once_each_way(
    database, broker, topic_prefix
):
    """SIGKILL at a random moment while the offline signals are consumed, and again while the
    back-online ones are (with a replay of the offline ones before them): each person gets one
    offline notice and one back-online notice."""
    rnd = random.Random(20261208)
    sms = SmsState()
    async with alerting_under_faults(database, broker, topic_prefix, sms) as (pool, kill):
        await with_atlas(pool)
        now = datetime.now(UTC)
        tid = await pool.fetchval(
            """INSERT INTO alerting.persons (name, role, region_code, jurisdiction, phone)
               VALUES ('镇值班', 'township_duty_officer', '110101001000', '110101001', $1)
               RETURNING id""",
            T,
        )
        await pool.execute(
            """INSERT INTO alerting.duty_roster (person_id, starts_at, ends_at)
               VALUES ($1, $2, $3)""",
            tid,
            now - timedelta(hours=1),
            now + timedelta(hours=8),
        )
        topics = Topics(topic_prefix)
        stations = [f"EN-{i}" for i in range(1, 6)]
        offline = [health(s, False, now) for s in stations]
        await produce(broker.bootstrap, topics.station_health, offline)
        await produce(
            broker.bootstrap, topics.risk_events, [nodata(s, True, now) for s in stations]
        )

        async def nothing_waiting() -> int:
            return 0

        assert await kill(rnd, nothing_waiting) == 1
        await eventually(
            lambda: _async(feed_texts(sms, "【监测离线】") == {T: 1, S: 1}),
            timeout_s=60,
            what="the offline notice",
        )
        later = datetime.now(UTC)
        back = [health(s, True, later) for s in stations]
        await produce(broker.bootstrap, topics.station_health, [*offline, *back])
        await produce(
            broker.bootstrap, topics.risk_events, [nodata(s, False, later) for s in stations]
        )
        assert await kill(rnd, nothing_waiting) == 1
        await eventually(
            lambda: _async(feed_texts(sms, "【恢复在线】") == {T: 1, S: 1}),
            timeout_s=60,
            what="the back-online notice",
        )
        # everything consumed and delivered: nothing more arrives
        await eventually(lambda: _all_sent(pool), timeout_s=30, what="the ledger drained")
        assert sms.per_number() == {T: 2, S: 2}
        assert await pool.fetchval("SELECT count(*) FROM alerting.feed_incidents") == 1


async def _all_sent(pool: Any) -> bool:
    n = await pool.fetchval(
        "SELECT count(*) FROM alerting.deliveries WHERE purpose = 'feed' AND state <> 'sent'"
    )
    total = await pool.fetchval("SELECT count(*) FROM alerting.deliveries WHERE purpose = 'feed'")
    return n == 0 and total == 4


async def _members_offline(pool: Conn, n: int) -> bool:
    """``n`` of the incident's three signals (two stations' health, EN-1's no-data) offline."""
    r = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE offline) AS off, count(*) AS n FROM alerting.feed_members"
    )
    return r is not None and (r["off"], r["n"]) == (n, 3)


async def _async(v: bool) -> bool:
    return v
