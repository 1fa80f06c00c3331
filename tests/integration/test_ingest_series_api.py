"""The series, CSV export and latest-value API of ingest: pushed readings read back raw and from
the roll-ups (refreshed by the service itself), region-scoped, with clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from services.ingest.app import create_app
from shared.devstack.inprocess import serve
from tests.helpers import eventually, identity_header, ingest_settings

T0 = datetime(2026, 7, 18, 16, tzinfo=UTC)  # Beijing midnight


async def test_series_csv_and_latest(database, broker, topic_prefix):
    settings = ingest_settings(database, broker, topic_prefix, rollup_refresh_s=0.2)
    hdr = identity_header(
        scopes=["readings:write", "readings:read", "stations:write"], region_prefix="110101"
    )
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post(
            "/v1/stations",
            headers=hdr,
            json={"id": "RG1", "name": "g", "kind": "rain_gauge", "region_code": "110101001001"},
        )
        assert r.status_code == 201, r.text
        readings = [
            {
                "station_id": "RG1",
                "metric": "rainfall",
                "unit": "mm",
                "value": 0.5 * (i % 4),
                "ts": (T0 + timedelta(minutes=10 * i)).isoformat(),
            }
            for i in range(36)  # six hours
        ]
        r = await c.post("/v1/readings", headers=hdr, json={"source": "city", "readings": readings})
        assert r.json()["accepted"] == 36
        params = {
            "metric": "rainfall",
            "from": T0.isoformat(),
            "to": (T0 + timedelta(hours=6)).isoformat(),
        }

        async def stored() -> dict | None:
            r = await c.get("/v1/stations/RG1/series", params=params, headers=hdr)
            return r.json() if len(r.json().get("points", [])) == 36 else None

        raw = await eventually(stored, what="the readings stored")
        assert raw["source"] == "raw"
        assert raw["points"][1] == {
            "ts": (T0 + timedelta(minutes=10)).isoformat().replace("+00:00", "Z"),
            "value": 0.5,
            "quality": 0,
        }

        async def hourly() -> dict | None:
            r = await c.get(
                "/v1/stations/RG1/series",
                params={**params, "bucket": "2h", "agg": "sum"},
                headers=hdr,
            )
            body = r.json()
            return body if len(body["points"]) == 3 else None

        rolled = await eventually(hourly, what="the hourly roll-ups refreshed")
        assert rolled["source"] == "1h"
        assert [p["value"] for p in rolled["points"]] == [9.0, 9.0, 9.0]  # 12 × mean 0.75

        r = await c.get(
            "/v1/stations/RG1/series",
            params={**params, "bucket": "1h", "format": "csv"},
            headers=hdr,
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        lines = r.text.strip().splitlines()
        assert lines[0] == "ts,avg"
        assert len(lines) == 7
        first_hour = sum(0.5 * (i % 4) for i in range(6)) / 6
        assert lines[1] == f"{T0.isoformat()},{first_hour!r}"

        r = await c.get("/v1/stations/RG1/latest", headers=hdr)
        assert r.json() == [
            {
                "metric": "rainfall",
                "ts": readings[-1]["ts"].replace("+00:00", "Z"),
                "value": readings[-1]["value"],
                "unit": "mm",
                "quality": 0,
            }
        ]

        # errors: a bucket that is no length, too many points, another region, a platform's key
        bad = await c.get(
            "/v1/stations/RG1/series", params={**params, "bucket": "fortnight"}, headers=hdr
        )
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        many = {**params, "from": "2000-01-01T00:00:00Z", "bucket": "1s"}
        assert (await c.get("/v1/stations/RG1/series", params=many, headers=hdr)).status_code == 422
        other = identity_header(scopes=["readings:read"], region_prefix="110102")
        r = await c.get("/v1/stations/RG1/series", params=params, headers=other)
        assert r.status_code == 403
        r = await c.get(
            "/v1/stations/RG1/latest",
            headers=identity_header(roles=["upstream_platform"], scopes=["readings:write"]),
        )
        assert r.status_code == 403


async def test_a_source_allowed_to_register_stations_does_so(database, broker, topic_prefix):
    settings = ingest_settings(database, broker, topic_prefix)
    admin = identity_header(scopes=["stations:write", "stations:read", "readings:write"])
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.put("/v1/sources/county-feed", headers=admin, json={"auto_register": True})
        assert r.status_code == 422  # it needs the region to register stations in
        r = await c.put(
            "/v1/sources/county-feed",
            headers=admin,
            json={"auto_register": True, "region_code": "110101002000"},
        )
        assert r.status_code == 200, r.text
        ts = T0.isoformat()
        body = {
            "source": "county-feed",
            "readings": [
                {
                    "station_id": "NEW-1",
                    "metric": "water_level",
                    "value": 2.5,
                    "unit": "m",
                    "ts": ts,
                }
            ],
        }
        r = await c.post("/v1/readings", headers=admin, json=body)
        assert r.json() == {"accepted": 1, "rejected": []}
        st = (await c.get("/v1/stations/NEW-1", headers=admin)).json()
        assert (st["kind"], st["region_code"]) == ("water_level", "110101002000")
        assert st["attributes"] == {"auto_registered_by": "county-feed"}
        other = {**body, "source": "someone-else"}
        other["readings"] = [{**body["readings"][0], "station_id": "NEW-2"}]
        r = await c.post("/v1/readings", headers=admin, json=other)
        assert r.json()["rejected"] == [{"index": 0, "reason": "unknown station 'NEW-2'"}]
        sources = (await c.get("/v1/sources", headers=admin)).json()
        assert [s["id"] for s in sources] == ["county-feed"]
