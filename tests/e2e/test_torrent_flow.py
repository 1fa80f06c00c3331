"""A mountain torrent from the field to a phone: a rain gauge above a village, registered through
the gateway with the village's critical rainfall from the county's survey, reports over SL 651
(TCP, as its RTU would) a downpour past the village's 立即转移 value; the report is answered,
risk raises the mountain-torrent pack's red level citing the survey's value, and the village
cadre's phone gets the SMS naming the hazard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.ingest.domain.sl651 import parse_frame
from services.ingest.domain.sl651_station import report_frame
from shared.devstack.inprocess import Stack, running_stack
from shared.devstack.procs import free_port
from tests.e2e.test_warning_flow import login
from tests.helpers import eventually

CADRE = "13900139301"
VILLAGE = "110101001002"
ADDRESS = "0011010012"
SL651_PORT = free_port()
GAUGE = {
    "id": "RG-TORRENT-01",
    "name": "清河沟上游雨量站",
    "kind": "rain_gauge",
    "region_code": VILLAGE,
    "interval_s": 300,
    "attributes": {
        "sl651_address": ADDRESS,
        "survey": "山洪灾害调查评价成果 (县级)",
        "critical_rainfall": {"prepare": {"1h": 30, "3h": 50}, "evacuate": {"1h": 40, "3h": 70}},
    },
}


@pytest.fixture
async def stack(database: str, broker, topic_prefix: str) -> AsyncIterator[Stack]:
    overrides = {"sl651_port": SL651_PORT, "sl651_udp": False}
    async with running_stack(
        database, broker.bootstrap, topic_prefix, ingest_overrides=overrides
    ) as s:
        yield s


async def test_a_downpour_past_the_villages_evacuation_value_reaches_the_cadre(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await login(c, "admin", stack.admin_password)
        r = await c.post("/api/v1/ingest/stations", json=GAUGE, headers=admin)
        assert r.status_code == 201, r.text
        r = await c.post(
            "/api/v1/alerts/persons",
            json={
                "name": "清河沟村村干部",
                "role": "village_cadre",
                "region_code": VILLAGE,
                "phone": CADRE,
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text

        # the RTU: a timed report with 45.0 mm in its 5-minute rainfall (PN05, 0x22)
        now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
        frame = report_frame(
            station=ADDRESS,
            function=0x32,
            serial=7,
            sent=now,
            observed=now,
            station_type=0x50,  # P: rain
            elements=[(0x22, 0x19, 45.0), (0x38, 0x12, 12.4)],
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", SL651_PORT)
        try:
            writer.write(frame)
            await writer.drain()
            head = await asyncio.wait_for(reader.readexactly(14), 15)
            length = int.from_bytes(head[11:13], "big") & 0x0FFF
            answer = parse_frame(head + await asyncio.wait_for(reader.readexactly(length + 3), 5))
        finally:
            writer.close()
        assert (answer.station, answer.function, answer.upward) == (ADDRESS, 0x32, False)

        async def texted() -> Any:
            return stack.sms.per_number().get(CADRE) == 1

        await eventually(texted, timeout_s=60, what="the cadre's SMS")
        sms = next(t for t in stack.sms.texts if CADRE in str(t))
        assert "山洪" in sms["text"] or "mountain" in sms["text"]

        (warning,) = (await c.get("/api/v1/alerts/warnings", headers=admin)).json()
        assert warning["level"] == "red"
        assert warning["hazard"] == "mountain_torrent"
        # what raised it, with the number and where it comes from
        r = await c.get(f"/api/v1/risk/stations/{GAUGE['id']}", headers=admin)
        assert r.status_code == 200, r.text
        rule = next(x for x in r.json()["rules"] if x["rule_id"] == "torrent.rain_1h")
        assert rule["level"] == "red"
        evidence = str(rule["evidence"])
        assert "立即转移" in evidence
        assert "40" in evidence
