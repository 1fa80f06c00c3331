"""The foundation's vertical slice through the gateway: a reading over a station's red threshold
becomes a red warning delivered to the webhook, and is listed by the warnings API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from services.ingest.adapters.divisions import DEFAULT_SOURCE, load_divisions
from shared.db import create_pool
from tests.helpers import eventually

STATION = {
    "id": "WL-001",
    "name": "Qinghe water level",
    "kind": "water_level",
    "region_code": "110101001001",
    "lat": 39.9,
    "lon": 116.4,
    "attributes": {
        "thresholds": {
            "water_level": {
                "blue": 3.0,
                "yellow": 3.5,
                "orange": 4.0,
                "red": 4.5,
                "restore": {"red": 4.3},
                "source": "station survey 2025",
            }
        }
    },
}


async def login(c: httpx.AsyncClient, password: str) -> dict[str, str]:
    r = await c.post("/api/v1/auth/token", data={"username": "admin", "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_red_reading_becomes_delivered_red_warning(stack, database):
    # the division names of the station's county, from the published edition
    pool = await create_pool(database)
    try:
        await load_divisions(pool, DEFAULT_SOURCE, prefixes=["110101001"])
    finally:
        await pool.close()
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await login(c, stack.admin_password)
        r = await c.post("/api/v1/ingest/stations", json=STATION, headers=admin)
        assert r.status_code == 201, r.text
        r = await c.post(
            "/api/v1/alerts/subscriptions",
            json={
                "name": "county duty desk",
                "channel": "webhook",
                "target": f"{stack.fake}/webhook/duty",
                "region_prefix": "110101",
                "min_level": "blue",
                "secret": "s3cret-s3cret-s3cret",
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        stack.inbox.secrets["duty"] = "s3cret-s3cret-s3cret"

        now = datetime.now(UTC).replace(microsecond=0)
        readings = [
            {
                "station_id": "WL-001",
                "metric": "water_level",
                "ts": (now - timedelta(minutes=10)).isoformat(),
                "value": 2.1,
                "unit": "m",
            },
            {
                "station_id": "WL-001",
                "metric": "water_level",
                "ts": (now - timedelta(minutes=5)).isoformat(),
                "value": 470,
                "unit": "cm",
            },
        ]
        r = await c.post(
            "/api/v1/ingest/readings",
            json={"source": "city-platform", "readings": readings},
            headers={"X-API-Key": stack.api_key},
        )
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": 2, "rejected": []}

        async def delivered():
            return [m for m in stack.inbox.messages if m["name"] == "duty"]

        got = await eventually(delivered, timeout_s=60, what="webhook delivery")
        body = got[0]["body"]
        assert body["level"] == "red"
        assert body["msg_type"] == "Alert"
        assert body["hazard"] == "flood"
        assert body["station_ids"] == ["WL-001"]
        assert body["headline"] == "东城区东华门街道发布洪水红色预警（I级）"  # places in words
        assert got[0]["signature_ok"] is True
        assert got[0]["idempotency_key"]

        r = await c.get("/api/v1/alerts/warnings", headers={"X-API-Key": stack.api_key})
        assert r.status_code == 403  # an upstream key may push, not read warnings
        r = await c.get("/api/v1/alerts/warnings", headers=admin)
        assert r.status_code == 200, r.text
        items = r.json()
        assert len(items) == 1
        w = items[0]
        assert (w["hazard"], w["level"], w["region_code"], w["state"]) == (
            "flood",
            "red",
            "110101001000",
            "issued",
        )
        assert w["station_ids"] == ["WL-001"]

        r = await c.get("/api/v1/risk/stations/WL-001", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["level"] == "red"

        # the four-colour map and a backtest, through the gateway
        r = await c.get(
            "/api/v1/risk/map", params={"admin_level": "township", "hazard": "flood"}, headers=admin
        )
        assert r.status_code == 200, r.text
        cells = {x["region_code"]: x for x in r.json()["regions"]}
        assert cells["110101001000"]["level"] == "red"
        assert cells["110101001000"]["region_name"] == "东城区东华门街道"
        assert cells["110101001000"]["counts"]["red"] == 1
        r = await c.post(
            "/api/v1/risk/backtests",
            json={
                "stations": ["WL-001"],
                "from": (now - timedelta(hours=1)).isoformat(),
                "to": now.isoformat(),
                "reference_events": [
                    {"station_id": "WL-001", "ts": now.isoformat(), "level": "red"}
                ],
            },
            headers=admin,
        )
        assert r.status_code == 200, r.text
        bt = r.json()
        assert bt["readings"] == 2
        assert bt["counts"]["red"] == 1
        assert len(bt["hits"]) == 1
        assert bt["hits"][0]["lead_time_s"] == 300.0  # the red reading came 5 min before
        r = await c.get("/api/v1/risk/map", headers={"X-API-Key": stack.api_key})
        assert r.status_code == 403  # an upstream key pushes data; it does not read the map

        async with httpx.AsyncClient(timeout=10) as plain:
            metrics = (await plain.get(stack.services["ingest"] + "/metrics")).text
        assert 'qianshao_consumer_lag_messages{consumer="ingest"' in metrics
        assert "qianshao_ingest_db_write_duration_seconds_count" in metrics
        assert 'qianshao_deliveries_total{channel="webhook",result="sent"}' in metrics
