from __future__ import annotations

import asyncpg
import httpx
import orjson

from services.ingest.app import create_app
from shared.devstack.inprocess import serve
from tests.helpers import eventually, identity_header, ingest_settings

STATION = {
    "id": "RG001",
    "name": "Rain gauge 1",
    "kind": "rain_gauge",
    "region_code": "110101001001",
    "lat": 39.9,
    "lon": 116.4,
    "attributes": {},
}


async def test_push_is_stored_once_and_bad_items_are_answered(database, broker, topic_prefix):
    settings = ingest_settings(database, broker, topic_prefix)
    app = create_app(settings)
    hdr = identity_header(scopes=["readings:write", "stations:write"])
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=hdr) as c:
        r = await c.post("/v1/stations", json=STATION)
        assert r.status_code == 201, r.text
        body = {
            "source": "city-platform",
            "readings": [
                {
                    "station_id": "RG001",
                    "metric": "rainfall",
                    "ts": "2026-07-01T08:00:00+08:00",
                    "value": 12.5,
                    "unit": "mm",
                },
                {
                    "station_id": "RG001",
                    "metric": "rainfall",
                    "ts": "2026-07-01T08:05:00",
                    "value": 1.0,
                    "unit": "mm",
                },
                {
                    "station_id": "NOPE",
                    "metric": "rainfall",
                    "ts": "2026-07-01T08:05:00+08:00",
                    "value": 1.0,
                },
                {
                    "station_id": "RG001",
                    "metric": "rainfall",
                    "ts": "2026-07-01T08:10:00+08:00",
                    "value": 1.2,
                    "unit": "cm",
                },
            ],
        }
        r = await c.post("/v1/readings", json=body)
        assert r.status_code == 202, r.text
        res = r.json()
        assert res["accepted"] == 2
        assert [x["index"] for x in res["rejected"]] == [1, 2]
        r2 = await c.post("/v1/readings", json=body)
        assert r2.json()["accepted"] == 2

        conn = await asyncpg.connect(database)
        try:

            async def count() -> int:
                n = await conn.fetchval("SELECT count(*) FROM ingest.readings")
                return int(n) if n == 2 else 0

            await eventually(count, what="two stored readings")
            rows = await conn.fetch("SELECT value, unit FROM ingest.readings ORDER BY ts")
            assert [(r["value"], r["unit"]) for r in rows] == [(12.5, "mm"), (12.0, "mm")]
        finally:
            await conn.close()

        r = await c.post(
            "/v1/readings", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/problem+json")
        assert orjson.loads(r.content)["status"] == 400


async def test_push_accepts_ndjson_and_gzip_and_refuses_oversized_bodies(
    database, broker, topic_prefix
):
    import gzip

    settings = ingest_settings(
        database, broker, topic_prefix, run_consumer=False, max_body_bytes=4096
    )
    app = create_app(settings)
    hdr = identity_header(scopes=["readings:write", "stations:write"])
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=hdr) as c:
        assert (await c.post("/v1/stations", json=STATION)).status_code == 201
        lines = [
            orjson.dumps({"source": "city-platform"}),
            orjson.dumps(
                {
                    "station_id": "RG001",
                    "metric": "rainfall",
                    "ts": "2026-07-01T08:00:00+08:00",
                    "value": 1.0,
                }
            ),
            b"",
            orjson.dumps(
                {
                    "station_id": "RG001",
                    "metric": "rainfall",
                    "ts": "2026-07-01T08:05:00+08:00",
                    "value": -3.0,
                }
            ),
        ]
        r = await c.post(
            "/v1/readings",
            content=b"\n".join(lines),
            headers={"content-type": "application/x-ndjson"},
        )
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 2  # -3 mm is refused by the consumer, not the edge

        body = orjson.dumps(
            {
                "source": "city-platform",
                "readings": [
                    {
                        "station_id": "RG001",
                        "metric": "rainfall",
                        "ts": "2026-07-01T08:10:00+08:00",
                        "value": 2.0,
                    }
                ],
            }
        )
        r = await c.post(
            "/v1/readings",
            content=gzip.compress(body),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 1

        big = orjson.dumps(
            {
                "source": "city-platform",
                "readings": [
                    {
                        "station_id": "RG001",
                        "metric": "rainfall",
                        "ts": "2026-07-01T08:10:00+08:00",
                        "value": 2.0,
                    }
                ]
                * 100,
            }
        )
        r = await c.post("/v1/readings", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")
        bomb = gzip.compress(b" " * 100_000)
        r = await c.post(
            "/v1/readings",
            content=bomb,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        assert r.status_code == 413
        r = await c.post(
            "/v1/readings",
            content=b"\x1f\x8bnot gzip",
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        assert r.status_code == 400
        r = await c.post("/v1/readings", json={"source": "city-platform", "readings": "nope"})
        assert r.status_code == 422
