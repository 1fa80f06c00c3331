"""A warning's life through the gateway, as people meet it: an operator registers people and
residents, a red reading raises the warning, the cadre's phone gets the SMS and the reply
through the provider's callback confirms it, a duty officer asks for the public broadcast and an
approver (not the duty officer) approves it, residents get it, and an officer of the next
township sees none of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from lxml import etree

from services.gateway.adapters.auth import create_operator
from shared.devstack.inprocess import CALLBACK_TOKEN
from tests.e2e.test_slice import STATION
from tests.helpers import eventually

CADRE = "13900139001"


async def login(c: httpx.AsyncClient, user: str, password: str) -> dict[str, str]:
    r = await c.post("/api/v1/auth/token", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_warning_life_through_the_gateway(stack):
    pool = stack.gateway_pool
    await create_operator(
        pool,
        username="duty",
        password="duty-pass-123",
        roles=["duty_officer"],
        region_prefix="110101",
    )
    await create_operator(
        pool,
        username="approver",
        password="appr-pass-123",
        roles=["approver"],
        region_prefix="110101",
    )
    await create_operator(
        pool,
        username="neighbour",
        password="nb-pass-1234",
        roles=["duty_officer"],
        region_prefix="110101002",
    )
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await login(c, "admin", stack.admin_password)
        duty = await login(c, "duty", "duty-pass-123")
        approver = await login(c, "approver", "appr-pass-123")
        neighbour = await login(c, "neighbour", "nb-pass-1234")
        assert (
            await c.post("/api/v1/ingest/stations", json=STATION, headers=admin)
        ).status_code == 201
        r = await c.post(
            "/api/v1/alerts/persons",
            json={
                "name": "清河村村干部",
                "role": "village_cadre",
                "region_code": "110101001001",
                "phone": CADRE,
            },
            headers=duty,
        )
        assert r.status_code == 201, r.text
        r = await c.post(
            "/api/v1/alerts/persons",
            json={
                "name": "外镇",
                "role": "village_cadre",
                "region_code": "120101001001",
                "phone": "13900139002",
            },
            headers=duty,
        )
        assert r.status_code == 403  # outside the duty officer's region
        r = await c.post(
            "/api/v1/alerts/subscriptions",
            json={
                "name": "province",
                "channel": "cap_push",
                "target": f"{stack.fake}/platform/province",
                "region_prefix": "110101",
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        csv = "\n".join(f"110101001001,1580000{i:04d}" for i in range(20))
        r = await c.post("/api/v1/alerts/residents/import", content=csv, headers=admin)
        assert r.json()["stored"] == 20

        now = datetime.now(UTC).replace(microsecond=0)
        r = await c.post(
            "/api/v1/ingest/readings",
            json={
                "source": "city-platform",
                "readings": [
                    {
                        "station_id": STATION["id"],
                        "metric": "water_level",
                        "unit": "m",
                        "ts": (now - timedelta(minutes=1)).isoformat(),
                        "value": 4.8,
                    },
                ],
            },
            headers={"X-API-Key": stack.api_key},
        )
        assert r.status_code == 202, r.text

        async def texted() -> Any:
            return stack.sms.per_number().get(CADRE) == 1

        await eventually(texted, what="the cadre's SMS")

        async def pushed() -> Any:
            return [m for m in stack.inbox.messages if m["provider"] == "platform"]

        (push,) = await eventually(pushed, what="the CAP push to the province")
        assert push["body"]["msg_type"] == "Alert"  # the platform checked it against the XSD
        assert "回复1" in stack.sms.texts[-1]["text"]

        # the reply comes back through the provider's callback, which needs no login
        r = await c.post(
            f"/api/v1/alerts/callbacks/{CALLBACK_TOKEN}/tencent/sms-reply",
            json={
                "mobile": CADRE,
                "nationcode": "86",
                "text": "1",
                "sign": "",
                "time": 0,
                "extend": "",
            },
        )
        assert r.status_code == 200, r.text
        r = await c.post("/api/v1/alerts/callbacks/wrong-token/tencent/sms-reply", json={})
        assert r.status_code == 403
        stats = (await c.get("/api/v1/alerts/confirmations/stats?by=village", headers=duty)).json()
        assert [(s["required"], s["confirmed"]) for s in stats] == [(1, 1)]

        (warning,) = (await c.get("/api/v1/alerts/warnings", headers=duty)).json()
        assert warning["level"] == "red"
        # valid for a day (the default) unless risk's standing announcements renew it
        valid = datetime.fromisoformat(warning["expires_at"]) - datetime.fromisoformat(
            warning["updated_at"]
        )
        assert timedelta(hours=23, minutes=59) < valid < timedelta(hours=24, minutes=1)
        r = await c.post(
            f"/api/v1/alerts/warnings/{warning['id']}/publication",
            json={"note": "建议向群众发布"},
            headers=duty,
        )
        assert r.status_code == 201, r.text
        pub = r.json()
        r = await c.post(f"/api/v1/alerts/publications/{pub['id']}/approve", json={}, headers=duty)
        assert r.status_code == 403
        r = await c.post(
            f"/api/v1/alerts/publications/{pub['id']}/approve", json={}, headers=approver
        )
        assert (r.status_code, r.json()["recipients"]) == (200, 20)

        async def broadcast() -> Any:
            per = stack.sms.per_number()
            return sum(1 for n in per if n.startswith("1580000")) == 20

        await eventually(broadcast, what="the resident broadcast")

        feed = await c.get("/api/v1/alerts/cap/feed", headers=duty)
        assert feed.status_code == 200
        entries = etree.fromstring(feed.content).findall("{http://www.w3.org/2005/Atom}entry")
        assert len(entries) == 1

        # the next township's officer sees nothing of it
        assert (await c.get("/api/v1/alerts/warnings", headers=neighbour)).json() == []
        r = await c.get(f"/api/v1/alerts/warnings/{warning['id']}", headers=neighbour)
        assert r.status_code == 404
        r = await c.post(
            f"/api/v1/alerts/warnings/{warning['id']}/publication", json={}, headers=neighbour
        )
        assert r.status_code == 404
        assert (await c.get("/api/v1/alerts/persons", headers=neighbour)).json() == []
