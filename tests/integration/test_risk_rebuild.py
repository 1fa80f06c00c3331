"""Risk state rebuilt from ingest.readings: a station the risk service has no checkpoint for starts
from the history ingest stored, and an operator can rebuild a station whose checkpoint was lost."""

from __future__ import annotations

from datetime import timedelta

import httpx

from services.risk.app import create_app
from shared.contracts import Topics
from shared.db import create_pool
from shared.devstack.inprocess import serve
from shared.kafka import EventProducer
from tests.helpers import eventually, identity_header, risk_settings, store_readings
from tests.integration.test_risk_service import T0, VILLAGE_RG, reading, setup_stations
from tests.kafka_util import read_all


async def test_a_station_without_checkpoint_starts_from_stored_history(
    database, broker, topic_prefix
):
    pool = await create_pool(database)
    await setup_stations(pool)
    # 2 h 30 min of 2 mm / 5 min stored by ingest before the risk service sees the station
    async with pool.acquire() as conn:
        await store_readings(
            conn,
            [
                ("RG1", "rainfall", T0 + timedelta(minutes=5 * i), 2.0, "mm", 0, [], "t")
                for i in range(1, 31)
            ],
        )
    settings = risk_settings(database, broker, topic_prefix)
    topics = Topics(topic_prefix)
    producer = await EventProducer.start(broker.bootstrap)
    hdr = identity_header(scopes=["risk:read", "rules:write"])
    try:
        async with (
            serve(create_app(settings)) as url,
            httpx.AsyncClient(base_url=url, headers=hdr) as c,
        ):
            # the next reading arrives: ingest stores it, then publishes it
            ts = T0 + timedelta(minutes=5 * 31)
            await pool.execute(
                """INSERT INTO ingest.readings
                       (station_id, metric, ts, value, unit, quality, checks, source)
                   VALUES ('RG1', 'rainfall', $1, 2.0, 'mm', 0, '{}', 't')""",
                ts,
            )
            await producer.send_json(
                topics.readings, [reading("RG1", VILLAGE_RG, "rain_gauge", "rainfall", ts, 2.0)]
            )

            async def level() -> str | None:
                r = await c.get("/v1/risk/stations/RG1")
                return r.json()["hazards"].get("rainstorm") if r.status_code == 200 else None

            assert await eventually(level, what="RG1 judged") == "orange"
            rows = await pool.fetch(
                "SELECT level, evidence FROM risk.rule_state WHERE station_id = 'RG1' "
                "AND rule_id = 'cma.rainstorm'"
            )
            assert rows[0]["level"] == 3
            # the stored history alone reached orange (50 mm at its 25th increment): announced
            # once, as rebuilt; the new reading (62 mm) changes nothing
            events = await _station_events(broker, topic_prefix, "RG1")
            assert [(e["previous_level"], e["level"]) for e in events] == [("none", "orange")]
            assert events[0]["evidence"]["value"] == 50.0
            assert events[0]["event_time"].startswith(
                (T0 + timedelta(minutes=150)).date().isoformat()
            )

            # the checkpoint is lost and the published level is wrong; an operator rebuilds
            await pool.execute("DELETE FROM risk.station_state WHERE station_id = 'RG1'")
            await pool.execute("UPDATE risk.rule_state SET level = 1 WHERE station_id = 'RG1'")
            r = await c.post("/v1/risk/stations/RG1/rebuild")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["readings"] == 31
            changes = {(x["rule_id"], x["previous_level"], x["level"]) for x in body["changes"]}
            assert ("cma.rainstorm", "blue", "orange") in changes
            assert await level() == "orange"
            assert await pool.fetchval(
                "SELECT count(*) FROM risk.station_state WHERE station_id = 'RG1'"
            )

            async def announced() -> bool:
                evs = await _station_events(broker, topic_prefix, "RG1")
                return ("blue", "orange") in {(e["previous_level"], e["level"]) for e in evs}

            await eventually(announced, what="the rebuilt level announced")
            # a second rebuild finds nothing to announce
            again = (await c.post("/v1/risk/stations/RG1/rebuild")).json()
            assert again["changes"] == []
            # and it is region-scoped: another township's duty officer may not
            other = identity_header(scopes=["rules:write"], region_prefix="110102")
            denied = await c.post("/v1/risk/stations/RG1/rebuild", headers=other)
            assert denied.status_code == 403
            assert (await c.post("/v1/risk/stations/NOPE/rebuild")).status_code == 404
    finally:
        await producer.stop()
        await pool.close()


async def _station_events(broker, topic_prefix: str, station: str) -> list[dict]:
    async def some() -> list[dict] | None:
        evs = [
            e
            for e in await read_all(broker.bootstrap, f"{topic_prefix}risk.events.v1")
            if e.get("station_id") == station and e.get("rule_id") == "cma.rainstorm"
        ]
        return evs or None

    return await eventually(some, what=f"risk events of {station}")
