"""Every SQL query of every Grafana dashboard, rendered the way Grafana's PostgreSQL data source
renders it, runs against a database migrated by all four services, and the panels that matter show
what the seeded data says: the four-colour map, the online rate per enterprise, the ledger backlog,
the people who have not confirmed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.alerting.app import MIGRATIONS as ALERTING
from services.gateway.app import MIGRATIONS as GATEWAY
from services.ingest.app import MIGRATIONS as INGEST
from services.risk.app import MIGRATIONS as RISK
from shared.db import create_pool, migrate
from shared.ops.dashboards import POSTGRES, build_all, panel_queries, render_sql

pytestmark = pytest.mark.integration

SEED = """
INSERT INTO ingest.stations (id, name, kind, region_code, lat, lon, owner_enterprise) VALUES
  ('WL-1', '清河水位', 'water_level', '110101001001', 39.9, 116.4, '水务公司'),
  ('WL-2', '北沙河水位', 'water_level', '110101001002', 39.95, 116.3, '水务公司'),
  ('RG-9', '外县雨量', 'rain_gauge', '120101001001', 39.1, 117.2, NULL);
INSERT INTO ingest.station_health (station_id, last_seen, online) VALUES
  ('WL-1', now(), true), ('WL-2', now() - interval '2 hours', false), ('RG-9', now(), true);
INSERT INTO ingest.source_minutes (source, topic, minute, messages, last_seen) VALUES
  ('city-platform', 'readings.raw.v1', date_trunc('minute', now()), 42, now());
INSERT INTO risk.rule_state (station_id, rule_id, hazard, region_code, level) VALUES
  ('WL-1', 'water_level', 'flood', '110101001001', 4),
  ('WL-1', 'rise_rate', 'flood', '110101001001', 2),
  ('WL-2', 'water_level', 'flood', '110101001002', 0),
  ('RG-9', 'rain_1h', 'rainstorm', '120101001001', 2);
INSERT INTO risk.region_level (region_code, hazard, admin_level, level, counts) VALUES
  ('110101001001', 'flood', 'village', 4, '{"stations": 1}');
INSERT INTO alerting.warnings (id, hazard, region_code, level, state, identifier) VALUES
  ('w1', 'flood', '110101001001', 4, 'issued', 'QS-w1');
INSERT INTO alerting.persons (name, role, region_code, jurisdiction, phone) VALUES
  ('王村长', 'village_cadre', '110101001001', '110101001001', '13900000001'),
  ('李网格', 'grid_worker', '110101001001', '110101001001', '13900000002');
INSERT INTO alerting.confirm_tasks (warning_id, version, person_id, region_code, level, created_at,
                                    confirmed_at, confirmed_via)
  SELECT 'w1', 1, id, region_code, 4, now() - interval '10 minutes',
         CASE WHEN name = '李网格' THEN now() - interval '5 minutes' END,
         CASE WHEN name = '李网格' THEN 'sms' END
  FROM alerting.persons;
INSERT INTO alerting.deliveries (warning_id, version, recipient, channel, target, idempotency_key,
                                 state, sent_at, created_at)
VALUES ('w1', 1, 'p:1', 'sms', '13900000001', 'k1', 'sent', now() - interval '9 minutes',
        now() - interval '10 minutes'),
       ('w1', 1, 'p:2', 'sms', '13900000002', 'k2', 'pending', NULL, now()),
       ('w1', 1, 'p:2', 'wechat', 'openid-2', 'k3', 'failed', NULL, now());
"""


async def run_all(conn: asyncpg.Connection, region: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    end = datetime.now(UTC) + timedelta(minutes=1)  # the dashboard's "now"
    for board in build_all().values():
        for q in panel_queries(board):
            if q.datasource != POSTGRES.uid:
                continue
            sql = render_sql(q.query, end - timedelta(hours=6), end, {"region": region})
            try:
                rows = await conn.fetch(sql)
            except asyncpg.PostgresError as e:  # pragma: no cover - the failure message
                pytest.fail(f"{q.dashboard} / {q.panel}: {e}\n{sql}")
            out[q.panel] = [dict(r) for r in rows]
    return out


async def test_every_dashboard_query_runs_and_shows_the_seeded_picture(database):
    pool = await create_pool(database)
    try:
        for schema, directory in (
            ("ingest", INGEST),
            ("risk", RISK),
            ("alerting", ALERTING),
            ("gateway", GATEWAY),
        ):
            await migrate(pool, schema, directory, storage="native")
        async with pool.acquire() as conn:
            await conn.execute(SEED)
            everything = await run_all(conn, "")
            county = await run_all(conn, "110101")
    finally:
        await pool.close()

    assert len(everything) >= 10
    # the four-colour map: a station's colour is its highest rule level; all three stations are
    # on the map with their coordinates, and the region filter keeps the county's two
    geo = {r["station"]: r for r in everything["四色图 · stations by current level"]}
    assert {k: v["level"] for k, v in geo.items()} == {"WL-1": 4, "RG-9": 2, "WL-2": 0}
    assert (geo["WL-1"]["lat"], geo["WL-1"]["lon"]) == (39.9, 116.4)
    assert geo["WL-1"]["hazards"] == "flood"
    assert [r["station"] for r in county["四色图 · stations by current level"]] == ["WL-1", "WL-2"]
    assert everything["Stations at each level"] == [{"red": 1, "orange": 0, "yellow": 1, "blue": 0}]
    assert county["Stations at each level"] == [{"red": 1, "orange": 0, "yellow": 0, "blue": 0}]
    assert [r["region_code"] for r in everything["Regions above normal"]] == ["110101001001"]

    online = {r["enterprise"]: r for r in everything["Online rate per enterprise (在线率)"]}
    assert online["水务公司"]["stations"] == 2
    assert float(online["水务公司"]["online_pct"]) == 50.0
    assert float(online["(unowned)"]["online_pct"]) == 100.0
    assert [r["station"] for r in everything["Offline stations"]] == ["WL-2"]
    per_source = everything["Messages per minute, by source"]
    assert [(r["metric"], r["messages"]) for r in per_source] == [("city-platform", 42)]

    backlog = {
        (r["channel"], r["state"]): r["deliveries"] for r in everything["Delivery ledger backlog"]
    }
    assert backlog == {("sms", "pending"): 1, ("wechat", "failed"): 1}
    assert everything["Ledger rows waiting"] == [{"waiting": 1}]
    channels = {r["channel"]: r for r in everything["Deliveries in range, by channel"]}
    assert (channels["sms"]["total"], channels["sms"]["sent"]) == (2, 1)
    assert float(channels["sms"]["p95_s"]) == 60.0
    assert [r["identifier"] for r in everything["Warnings in range"]] == ["QS-w1"]

    waiting = everything["Not yet confirmed (叫而未应)"]
    assert [r["name"] for r in waiting] == ["王村长"]
    assert 590 <= waiting[0]["waiting_s"] <= 700
    township = everything["叫应 rate per township, in range"]
    assert township[0]["township"] == "110101001"
    assert (township[0]["tasks"], township[0]["confirmed"]) == (2, 1)
    assert float(township[0]["median_s"]) == 300.0
