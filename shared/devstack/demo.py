"""The demo feed: a rainstorm replayed over a few stations of a real county, pushed through the
gateway.

The county is 乐山市五通桥区 (511112), where the 茫溪河 meets the 岷江: rain gauges in
竹根镇's 岷江社区 and 茶花村, a gauge on the 岷江 at 两河口社区 and one on the 茫溪河 at
牛华镇's 二码头社区, with their real division codes (NBS 2023), so every text names the place
in words. The thresholds are demo values, not the stations' survey results.

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
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from services.ingest.domain.sl651_station import report_frame

DEMO_SOURCE = "demo-city-platform"
# the demo county's bureau: 511112 (乐山市五通桥区) + department + unit + serial
DEMO_SENDER_CODE = "51111200000001"
DEMO_SENDER_NAME = "乐山市五通桥区应急管理局"

DEMO_STATIONS: list[dict[str, Any]] = [
    {
        "id": "RG-ZG-01",
        "name": "竹根镇岷江社区雨量站",
        "kind": "rain_gauge",
        "region_code": "511112100007",
        "lat": 29.406,
        "lon": 103.821,
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
        "id": "RG-ZG-02",
        "name": "竹根镇茶花村雨量站",
        "kind": "rain_gauge",
        "region_code": "511112100202",
        "lat": 29.392,
        "lon": 103.803,
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
        "id": "WL-ZG-01",
        "name": "岷江五通桥水位站（两河口）",
        "kind": "water_level",
        "region_code": "511112100001",
        "lat": 29.411,
        "lon": 103.815,
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
        "id": "WL-NH-01",
        "name": "茫溪河牛华水位站",
        "kind": "water_level",
        "region_code": "511112101001",
        "lat": 29.457,
        "lon": 103.772,
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

# an RTU on the 岷江 at 竹根镇's 杨柳湾社区 that speaks SL 651-2014 to ingest's receiver: its
# station is found by its address
SL651_STATION: dict[str, Any] = {
    "id": "WL-ZG-02",
    "name": "岷江竹根滩水位站（SL 651 遥测）",
    "kind": "water_level",
    "region_code": "511112100009",
    "lat": 29.402,
    "lon": 103.826,
    "interval_s": 300,
    "attributes": {
        "sl651_address": "0051111201",
        "thresholds": {
            "water_level": {
                "blue": 3.2,
                "yellow": 3.7,
                "orange": 4.2,
                "red": 4.8,
                "restore": {"blue": 3.1},
                "hazard": "flood",
                "source": "demo values, not an official criterion",
            }
        },
    },
}
DEMO_STATIONS.append(SL651_STATION)

# a waterlogging point in 竹根镇's town centre whose gateway publishes over MQTT in the
# ThingsBoard gateway's form, under its device name (mapped to the station in ingest's
# subscription, MQTT_SUBSCRIPTION below)
MQTT_STATION: dict[str, Any] = {
    "id": "WLG-ZG-01",
    "name": "竹根镇滨江路积水监测点（MQTT 网关）",
    "kind": "waterlogging",
    "region_code": "511112100001",
    "lat": 29.404,
    "lon": 103.823,
    "interval_s": 300,
}
DEMO_STATIONS.append(MQTT_STATION)
MQTT_DEVICE = "滨江路积水点"
MQTT_SUBSCRIPTION: dict[str, Any] = {
    "topic": "v1/gateway/telemetry",
    "form": "thingsboard",
    "source": "city-gateway",
    "metrics": {"depth": {"metric": "waterlogging_depth", "unit": "cm"}},
    "devices": {MQTT_DEVICE: MQTT_STATION["id"]},
}

PERIOD = 90  # ticks in one storm cycle


def storm(tick: int) -> dict[tuple[str, str], float]:
    """Values for every station at a tick: a storm that peaks a third of the way through."""
    phase = (tick % PERIOD) / PERIOD
    rain = max(0.0, math.sin(math.pi * min(1.0, phase * 1.6)))  # 0 → 1 → 0 over ~60 % of a cycle
    lagged = max(0.0, math.sin(math.pi * min(1.0, max(0.0, phase - 0.1) * 1.4)))
    return {
        ("RG-ZG-01", "rainfall_1h"): round(2 + 78 * rain, 1),
        ("RG-ZG-02", "rainfall_1h"): round(1 + 42 * rain, 1),
        ("WL-ZG-01", "water_level"): round(2.2 + 2.6 * lagged, 2),
        ("WL-NH-01", "water_level"): round(1.8 + 1.6 * lagged, 2),
        ("WL-ZG-02", "water_level"): round(2.4 + 2.7 * lagged, 2),
        ("WLG-ZG-01", "waterlogging_depth"): round(max(0.0, 32 * rain - 4), 1),
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
            "region_prefix": "511112",
            "min_level": "blue",
        },
        {
            "name": "竹根镇 WeCom group",
            "channel": "wecom_robot",
            "target": wecom,
            "region_prefix": "511112100",
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
        "name": "岷江社区 社区干部",
        "role": "village_cadre",
        "region_code": "511112100007",
        "phone": "13800138001",
    },
    {
        "name": "茶花村 网格员",
        "role": "grid_worker",
        "region_code": "511112100202",
        "phone": "13800138002",
    },
    {
        "name": "五通桥区 区领导",
        "role": "leader",
        "region_code": "511112000000",
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
    sl651: tuple[str, int] | None = None,
    mqtt: MqttGateway | None = None,
) -> None:
    """Pushes each tick's readings through the gateway; the SL 651 station's go over TCP to
    ``sl651`` as its RTU would send them (a timed report), and its answers are read; the
    waterlogging point's are published by its ``mqtt`` gateway."""
    tick = 0
    rtu = Rtu(sl651, say) if sl651 else None
    own = {SL651_STATION["id"]} if rtu else set()
    if mqtt is not None:
        own.add(MQTT_STATION["id"])
    try:
        while ticks is None or tick < ticks:
            now = datetime.now(UTC).replace(microsecond=0)
            values = storm(tick)
            readings = [
                {
                    "station_id": sid,
                    "metric": metric,
                    "ts": now.isoformat(),
                    "value": v,
                    "unit": {"water_level": "m", "waterlogging_depth": "cm"}.get(metric, "mm"),
                }
                for (sid, metric), v in values.items()
                if sid not in own
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
            if rtu is not None:
                await rtu.report(now, values[(SL651_STATION["id"], "water_level")])
            if mqtt is not None:
                depth = values[(MQTT_STATION["id"], "waterlogging_depth")]
                await asyncio.to_thread(mqtt.publish, now, depth, tick % 5 == 0)
            tick += 1
            await asyncio.sleep(tick_s)
    finally:
        if rtu is not None:
            rtu.close()
        if mqtt is not None:
            mqtt.close()


class MqttGateway:
    """The demo's MQTT gateway: publishes the waterlogging point's depth with QoS 1 in the
    ThingsBoard gateway's telemetry form, as a city's IoT gateway would."""

    def __init__(
        self, host: str, port: int, username: str, password: str, say: Callable[[str], None]
    ) -> None:
        self._say = say
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-city-gateway")
        self._client.username_pw_set(username, password)
        self._client.connect_async(host, port)
        self._client.loop_start()

    def publish(self, now: datetime, depth: float, tell: bool) -> None:
        body = {MQTT_DEVICE: [{"ts": int(now.timestamp() * 1000), "values": {"depth": depth}}]}
        info = self._client.publish(MQTT_SUBSCRIPTION["topic"], orjson.dumps(body), qos=1)
        try:
            info.wait_for_publish(5)
        except (RuntimeError, ValueError) as exc:
            self._say(f"[demo] MQTT gateway could not publish: {exc!r}")
            return
        if tell:
            self._say(f"[demo] MQTT gateway published {MQTT_DEVICE} depth {depth:g} cm")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Rtu:
    """The demo's SL 651 station: one TCP connection kept open, a timed report each minute (its
    observation time has minutes, not seconds: a second report in the same minute would be a
    repeat of the first)."""

    def __init__(self, where: tuple[str, int], say: Callable[[str], None]) -> None:
        self._where = where
        self._say = say
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._minute: datetime | None = None
        self._serial = 0

    async def report(self, now: datetime, level: float) -> None:
        minute = now.replace(second=0)
        if minute == self._minute:
            return
        self._minute = minute
        self._serial = (self._serial + 1) % 65536
        frame = report_frame(
            station=SL651_STATION["attributes"]["sl651_address"],
            function=0x32,
            serial=self._serial,
            sent=now,
            observed=now,
            station_type=0x48,  # H: river
            elements=[(0x39, 0x23, level), (0x38, 0x12, 12.6)],  # Z (m, 3 decimals), VT
        )
        try:
            if self._conn is None:
                self._conn = await asyncio.open_connection(*self._where)
            reader, writer = self._conn
            writer.write(frame)
            await writer.drain()
            head = await asyncio.wait_for(reader.readexactly(14), 5)
            length = int.from_bytes(head[11:13], "big") & 0x0FFF
            await asyncio.wait_for(reader.readexactly(length + 3), 5)
            self._say(f"[demo] SL 651 report {frame.hex().upper()[:28]}… answered (Z {level:g} m)")
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            self._say(f"[demo] SL 651 station could not report: {exc!r}")
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None
