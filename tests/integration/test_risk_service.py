"""The risk service on the real broker and database: pack rules per station, region roll-up and the
four-colour map, station evidence, an upstream rainstorm red warning escalating a geohazard site,
the no-data sweep, the standing announcements, overrides refused when looser, and a backtest over
stored readings."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
import orjson

from services.ingest.app import MIGRATIONS as INGEST
from services.risk.app import create_app
from services.risk.workers.nodata import NoDataSweep
from services.risk.workers.standing import StandingAnnouncer
from shared.clock import ManualClock, SystemClock
from shared.contracts import Level, Reading, Topics, UpstreamWarning, stable_id
from shared.db import DailyPartitions, create_pool, migrate
from shared.devstack.inprocess import serve
from shared.kafka import EventProducer
from shared.outbox import OutboxRelay
from tests.helpers import eventually, identity_header, risk_settings
from tests.kafka_util import read_all

T0 = datetime(2026, 7, 1, tzinfo=UTC)
VILLAGE_RG = "110101001001"
VILLAGE_GEO = "110101001002"
GEO_ATTRS = {"critical_rain_24h": {"blue": 60, "yellow": 120, "orange": 180, "red": 250}}


def reading(station: str, region: str, kind: str, metric: str, ts: datetime, value: float):
    ev = Reading(
        event_id=stable_id(station, metric, ts),
        produced_at=ts,
        station_id=station,
        region_code=region,
        station_kind=kind,
        metric=metric,
        ts=ts,
        value=value,
        unit="mm",
        source="test",
    )
    return station, ev.model_dump(mode="json")


async def setup_stations(pool: asyncpg.Pool) -> None:
    await migrate(pool, "ingest", INGEST, storage="native")
    await pool.executemany(
        """INSERT INTO ingest.stations (id, name, kind, region_code, interval_s, attributes)
           VALUES ($1, $1, $2, $3, 300, $4)""",
        [
            ("RG1", "rain_gauge", VILLAGE_RG, {}),
            ("GEO1", "gnss_displacement", VILLAGE_GEO, GEO_ATTRS),
        ],
    )


async def test_rain_raises_stations_and_regions_and_an_upstream_red_warning_escalates_the_site(
    database, broker, topic_prefix
):
    pool = await create_pool(database)
    await setup_stations(pool)
    settings = risk_settings(database, broker, topic_prefix)
    topics = Topics(topic_prefix)
    producer = await EventProducer.start(broker.bootstrap)
    hdr = identity_header(scopes=["risk:read", "rules:write"])
    try:
        async with (
            serve(create_app(settings)) as url,
            httpx.AsyncClient(base_url=url, headers=hdr) as c,
        ):
            # 3 mm every 5 minutes for 3 hours at both stations: 108 mm in 3 h
            items = []
            for i in range(36):
                ts = T0 + timedelta(minutes=5 * (i + 1))
                items.append(reading("RG1", VILLAGE_RG, "rain_gauge", "rainfall", ts, 3.0))
                items.append(reading("GEO1", VILLAGE_GEO, "gnss_displacement", "rainfall", ts, 3.0))
            # amid them, an event the contract refuses (an 11-digit region): dead-lettered alone
            good_doc = reading("RG1", VILLAGE_RG, "rain_gauge", "rainfall", T0, 99.0)[1]
            items.insert(10, ("RG1", {**good_doc, "region_code": "11010100100"}))
            await producer.send_json(topics.readings, items)

            async def station(sid: str) -> dict | None:
                r = await c.get(f"/v1/risk/stations/{sid}")
                return r.json() if r.status_code == 200 else None

            async def rg_red() -> dict | None:
                s = await station("RG1")
                return s if s and s["hazards"].get("rainstorm") == "red" else None

            rg = await eventually(rg_red, what="RG1 red for rainstorm")
            dead = await read_all(broker.bootstrap, f"{topics.readings}.dlq")
            assert [(d["reason"], orjson.loads(d["payload"])["region_code"]) for d in dead] == [
                ("invalid_event", "11010100100")
            ]
            assert "region_code" in dead[0]["detail"]
            rule = next(x for x in rg["rules"] if x["rule_id"] == "cma.rainstorm")
            assert rule["evidence"]["signal"] == "sum(rainfall,3h)"
            assert rule["evidence"]["value"] == 102.0  # red was reached at the 34th increment
            assert "暴雨红色预警信号" in rule["evidence"]["criteria"][0]["source"]

            async def geo_level(level: str):
                s = await station("GEO1")
                return s if s and s["hazards"].get("geohazard") == level else None

            await eventually(lambda: geo_level("blue"), what="GEO1 blue (108 mm in 24 h ≥ 60)")

            # the meteorological service issues a rainstorm red warning for the county
            up = UpstreamWarning(
                event_id="up1",
                produced_at=T0,
                identifier="11000041600000_20260701110000_1",
                sender="11000041600000",
                sent=T0 + timedelta(hours=3),
                msg_type="Alert",
                status="Actual",
                event="暴雨红色预警",
                level="red",
                region_codes=["110101000000"],
            )
            await producer.send_json(
                topics.warnings_upstream, [("up1", up.model_dump(mode="json"))]
            )
            geo = await eventually(lambda: geo_level("yellow"), what="GEO1 raised one level")
            raise_rule = next(x for x in geo["rules"] if x["rule_id"] == "geo.rainstorm_red_raise")
            assert raise_rule["level"] == "yellow"

            # the four-colour map at township level
            m = (await c.get("/v1/risk/map", params={"admin_level": "township"})).json()
            cells = {(x["region_code"], x["hazard"]): x for x in m["regions"]}
            town = cells[("110101001000", "rainstorm")]
            assert (town["level"], town["colour"]) == ("red", "红色")
            assert town["counts"]["red"] == 1
            assert cells[("110101001000", "geohazard")]["level"] == "yellow"
            scoped = await c.get(
                "/v1/risk/map",
                headers=identity_header(scopes=["risk:read"], region_prefix="110102"),
            )
            assert scoped.json()["regions"] == []  # another county sees nothing of ours

            # events on the topic: station and region scope, with idempotency keys
            async def published():
                evs = await read_all(broker.bootstrap, topics.risk_events)
                regions = {
                    (e["region_code"], e["hazard"], e["level"])
                    for e in evs
                    if e["scope"] == "region"
                }
                return evs if ("110101000000", "geohazard", "yellow") in regions else None

            evs = await eventually(published, what="region events published")
            assert len({e["event_id"] for e in evs}) == len(evs)
            assert any(
                e["scope"] == "region"
                and e["region_code"] == "110101001000"
                and e["hazard"] == "rainstorm"
                and e["level"] == "red"
                for e in evs
            )

            # overrides: looser refused citing the clause, stricter accepted
            bad = await c.put(
                "/v1/risk/overrides",
                json={
                    "region_prefix": "110101",
                    "rule_id": "chem.combustible_gas",
                    "level": "orange",
                    "value": 30,
                    "reason": "test",
                },
            )
            assert bad.status_code == 422
            assert bad.headers["content-type"].startswith("application/problem+json")
            assert "§5.5.3" in bad.json()["detail"]
            ok = await c.put(
                "/v1/risk/overrides",
                json={
                    "region_prefix": "110101",
                    "rule_id": "chem.combustible_gas",
                    "level": "orange",
                    "value": 20,
                    "reason": "county plan 2026",
                },
            )
            assert ok.status_code == 200, ok.text
            packs = (await c.get("/v1/risk/packs")).json()
            assert {p["id"] for p in packs} >= {"cma_meteorological", "coal_mine", "hydrology"}

        # no-data: both stations last reported on 2026-07-01, far more than 3 × 5 min ago
        relay = OutboxRelay(pool, "risk", producer)
        sweep = NoDataSweep(pool=pool, relay=relay, topics=topics, clock=SystemClock())
        assert await sweep.sweep_once() == 2
        assert await sweep.sweep_once() == 0  # once only
        rows = await pool.fetch(
            "SELECT payload FROM risk.outbox WHERE payload->>'kind' = 'no_data'"
        )
        assert sorted(r["payload"]["station_id"] for r in rows) == ["GEO1", "RG1"]
        # silence leaves the levels as they were
        lvl = await pool.fetchval("SELECT max(level) FROM risk.rule_state WHERE station_id = 'RG1'")
        assert lvl == 4
        await _standing_announcements(pool, relay, topics)
    finally:
        await producer.stop()
        await pool.close()


async def _standing_announcements(pool: asyncpg.Pool, relay: OutboxRelay, topics: Topics) -> None:
    """Every level above none and every county roll-up, once a period; a level cleared while
    the announcement waits for its rows is not announced after its all-clear."""
    clock = ManualClock(datetime(2026, 7, 2, tzinfo=UTC))
    job = StandingAnnouncer(pool=pool, relay=relay, topics=topics, clock=clock, every_s=900)
    standing = await pool.fetch(
        "SELECT station_id, rule_id, level FROM risk.rule_state WHERE level > 0"
    )
    counties = await pool.fetch(
        "SELECT region_code, hazard, level FROM risk.region_level WHERE admin_level = 'county'"
    )
    assert {r["station_id"] for r in standing} == {"RG1", "GEO1"}
    assert counties
    n = len(standing) + len(counties)
    assert await job.announce_once() == n
    assert await job.announce_once() == 0  # the same period: already announced
    events = [
        r["payload"]
        for r in await pool.fetch(
            "SELECT payload FROM risk.outbox WHERE payload->>'change' = 'standing' ORDER BY seq"
        )
    ]
    assert {
        (e["station_id"], e["rule_id"], e["level"]) for e in events if e["scope"] == "station"
    } == {(r["station_id"], r["rule_id"], Level(r["level"]).name) for r in standing}
    assert {
        (e["region_code"], e["hazard"], e["level"]) for e in events if e["scope"] == "region"
    } == {(r["region_code"], r["hazard"], Level(r["level"]).name) for r in counties}
    assert all(e["previous_level"] == e["level"] for e in events)
    # the next period; RG1's levels are being cleared by a transaction still open
    clock.advance(900)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("UPDATE risk.rule_state SET level = 0 WHERE station_id = 'RG1'")
        pending = asyncio.create_task(job.announce_once())
        await asyncio.sleep(0.5)
        assert not pending.done()  # waits for the rows it announces
        await tx.commit()
    cleared = sum(1 for r in standing if r["station_id"] == "RG1")
    assert await pending == n - cleared
    later = await pool.fetch(
        """SELECT payload->>'station_id' AS sid FROM risk.outbox
            WHERE payload->>'change' = 'standing' AND payload->>'scope' = 'station'"""
    )
    assert sum(1 for r in later if r["sid"] == "RG1") == cleared  # the first period's only


async def test_backtest_replays_stored_readings_and_scores_against_references(database, broker):
    pool = await create_pool(database)
    await setup_stations(pool)
    settings = risk_settings(database, broker, "", run_consumer=False)
    # two storms on RG1: day 1 reaches red (100 mm in 3 h), day 3 only 40 mm (no warning)
    rows = []
    for day, per_step in ((0, 3.0), (2, 1.0)):
        for i in range(40):
            ts = T0 + timedelta(days=day, minutes=5 * (i + 1))
            rows.append(("RG1", "rainfall", ts, per_step, "mm", 0, [], "test"))
    async with pool.acquire() as conn:
        await DailyPartitions("ingest.readings").ensure(
            conn, {date(2026, 7, 1) + timedelta(days=d) for d in range(4)}
        )
        await conn.copy_records_to_table(
            "readings",
            schema_name="ingest",
            records=rows,
            columns=["station_id", "metric", "ts", "value", "unit", "quality", "checks", "source"],
        )
    hdr = identity_header(scopes=["risk:read"])
    try:
        async with (
            serve(create_app(settings)) as url,
            httpx.AsyncClient(base_url=url, headers=hdr) as c,
        ):
            body = {
                "pack": "cma_meteorological",
                "stations": ["RG1"],
                "from": T0.isoformat(),
                "to": (T0 + timedelta(days=4)).isoformat(),
                "reference_events": [
                    # a real red storm reported at 02:30 (we raised red at 02:50: 20 min late)
                    {
                        "station_id": "RG1",
                        "ts": (T0 + timedelta(hours=2, minutes=30)).isoformat(),
                        "level": "red",
                    },
                    # an event the rules never saw
                    {
                        "station_id": "RG1",
                        "ts": (T0 + timedelta(days=3, hours=12)).isoformat(),
                        "level": "blue",
                    },
                ],
                "match_window_s": 3600,
            }
            r = await c.post("/v1/risk/backtests", json=body)
            assert r.status_code == 200, r.text
            res = r.json()
            assert res["readings"] == 80
            raised = [(e["level"], e["ts"]) for e in res["events"] if e["change"] == "raised"]
            # 3 mm steps: orange at 50 mm (17th step, 01:25), red at 100 mm (34th, 02:50)
            assert raised == [
                ("orange", (T0 + timedelta(minutes=85)).isoformat()),
                ("red", (T0 + timedelta(minutes=170)).isoformat()),
            ]
            assert res["counts"] == {"blue": 0, "yellow": 0, "orange": 1, "red": 1}
            assert len(res["hits"]) == 1
            assert res["hits"][0]["lead_time_s"] == -1200.0
            assert [m["level"] for m in res["misses"]] == ["blue"]
            assert [e["level"] for e in res["false_alarms"]] == ["orange"]
            assert res["hit_rate"] == 0.5
            bad = await c.post("/v1/risk/backtests", json={**body, "to": body["from"]})
            assert bad.status_code == 422
    finally:
        await pool.close()
