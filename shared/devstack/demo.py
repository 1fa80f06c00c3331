"""The demo feed: a rainstorm replayed over a few stations, pushed through the gateway.

Each tick pushes one reading per station, stamped with the current time. Rain rises to a peak and
falls off; the river levels follow with a lag. Thresholds sit in the stations' attributes, so the
stack raises, updates and cancels warnings as the storm passes, and the fake providers show them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

DEMO_SOURCE = "demo-city-platform"

DEMO_STATIONS: list[dict[str, Any]] = [
    {
        "id": "RG-QH-01",
        "name": "清河镇雨量站 1",
        "kind": "rain_gauge",
        "region_code": "110101001001",
        "lat": 39.95,
        "lon": 116.40,
        "interval_s": 300,
        "attributes": {
            "thresholds": {
                "rainfall_1h": {
                    "blue": 20,
                    "yellow": 30,
                    "orange": 50,
                    "red": 70,
                    "restore": {"blue": 15, "yellow": 25, "orange": 45, "red": 65},
                    "hazard": "rainstorm",
                    "source": "demo values, not an official criterion",
                }
            }
        },
    },
    {
        "id": "RG-QH-02",
        "name": "清河镇雨量站 2",
        "kind": "rain_gauge",
        "region_code": "110101001002",
        "lat": 39.96,
        "lon": 116.42,
        "interval_s": 300,
        "attributes": {
            "thresholds": {
                "rainfall_1h": {
                    "blue": 20,
                    "yellow": 30,
                    "orange": 50,
                    "red": 70,
                    "hazard": "rainstorm",
                    "source": "demo values, not an official criterion",
                }
            }
        },
    },
    {
        "id": "WL-QH-01",
        "name": "清河水位站",
        "kind": "water_level",
        "region_code": "110101001001",
        "lat": 39.94,
        "lon": 116.41,
        "interval_s": 300,
        "attributes": {
            "warning_level": 3.0,
            "guaranteed_level": 4.0,
            "historic_max": 4.6,
            "thresholds": {
                "water_level": {
                    "blue": 3.0,
                    "yellow": 3.5,
                    "orange": 4.0,
                    "red": 4.6,
                    "restore": {"blue": 2.9},
                    "hazard": "flood",
                    "source": "station attributes: warning 3.0 m, guaranteed 4.0 m, max 4.6 m",
                }
            },
        },
    },
    {
        "id": "WL-BS-01",
        "name": "北沙河水位站",
        "kind": "water_level",
        "region_code": "110101002001",
        "lat": 39.90,
        "lon": 116.30,
        "interval_s": 300,
        "attributes": {
            "thresholds": {
                "water_level": {
                    "blue": 2.5,
                    "yellow": 3.0,
                    "orange": 3.5,
                    "red": 4.0,
                    "hazard": "flood",
                    "source": "demo values",
                }
            }
        },
    },
]

PERIOD = 90  # ticks in one storm cycle


def storm(tick: int) -> dict[tuple[str, str], float]:
    """Values for every station at a tick: a storm that peaks a third of the way through."""
    phase = (tick % PERIOD) / PERIOD
    rain = max(0.0, math.sin(math.pi * min(1.0, phase * 1.6)))  # 0 → 1 → 0 over ~60 % of a cycle
    lagged = max(0.0, math.sin(math.pi * min(1.0, max(0.0, phase - 0.1) * 1.4)))
    return {
        ("RG-QH-01", "rainfall_1h"): round(2 + 78 * rain, 1),
        ("RG-QH-02", "rainfall_1h"): round(1 + 42 * rain, 1),
        ("WL-QH-01", "water_level"): round(2.2 + 2.6 * lagged, 2),
        ("WL-BS-01", "water_level"): round(1.8 + 1.6 * lagged, 2),
    }


async def setup_demo(
    client: httpx.AsyncClient, admin_headers: dict[str, str], webhook: str, wecom: str
) -> None:
    for st in DEMO_STATIONS:
        r = await client.post("/api/v1/ingest/stations", json=st, headers=admin_headers)
        if r.status_code == 409:
            r = await client.put(
                f"/api/v1/ingest/stations/{st['id']}", json=st, headers=admin_headers
            )
        r.raise_for_status()
    r = await client.get("/api/v1/alerts/subscriptions", headers=admin_headers)
    r.raise_for_status()
    have = {s["name"] for s in r.json()}
    for sub in (
        {
            "name": "county duty desk (webhook)",
            "channel": "webhook",
            "target": webhook,
            "region_prefix": "110101",
            "min_level": "blue",
        },
        {
            "name": "township WeCom group",
            "channel": "wecom_robot",
            "target": wecom,
            "region_prefix": "110101001",
            "min_level": "yellow",
        },
    ):
        if sub["name"] not in have:
            (
                await client.post("/api/v1/alerts/subscriptions", json=sub, headers=admin_headers)
            ).raise_for_status()
    r = await client.get("/api/v1/alerts/persons", headers=admin_headers)
    r.raise_for_status()
    known = {p["name"] for p in r.json()}
    for person in DEMO_PEOPLE:
        if person["name"] not in known:
            (
                await client.post("/api/v1/alerts/persons", json=person, headers=admin_headers)
            ).raise_for_status()


# people who get the demo's warnings by SMS (through the local Aliyun/Tencent stand-ins)
DEMO_PEOPLE: list[dict[str, Any]] = [
    {
        "name": "清河村 村干部",
        "role": "village_cadre",
        "region_code": "110101001001",
        "phone": "13800138001",
    },
    {
        "name": "清河镇 网格员",
        "role": "grid_worker",
        "region_code": "110101001002",
        "phone": "13800138002",
    },
    {
        "name": "区领导",
        "role": "leader",
        "region_code": "110101000000",
        "phone": "13800138009",
        "subscriptions": [{"min_level": "orange", "channels": ["sms"]}],
    },
]


async def run_feed(
    client: httpx.AsyncClient,
    api_key: str,
    *,
    tick_s: float = 2.0,
    ticks: int | None = None,
    say: Callable[[str], None] = print,
) -> None:
    tick = 0
    while ticks is None or tick < ticks:
        now = datetime.now(UTC).replace(microsecond=0)
        values = storm(tick)
        readings = [
            {
                "station_id": sid,
                "metric": metric,
                "ts": now.isoformat(),
                "value": v,
                "unit": "mm" if metric.startswith("rain") else "m",
            }
            for (sid, metric), v in values.items()
        ]
        try:
            r = await client.post(
                "/api/v1/ingest/readings",
                json={"source": DEMO_SOURCE, "readings": readings},
                headers={"X-API-Key": api_key},
            )
            if r.status_code != 202:
                say(f"[demo] push answered {r.status_code}: {r.text[:200]}")
            elif tick % 5 == 0:
                say("[demo] " + "  ".join(f"{sid} {v:g}" for (sid, _m), v in values.items()))
        except httpx.HTTPError as exc:
            say(f"[demo] push failed: {exc!r}")
        tick += 1
        await asyncio.sleep(tick_s)
