"""An officer's warning through the gateway, as the duty room meets it: a duty officer drafts a
public red rainstorm warning for 东华门街道 after a consultation, an approver (never the duty
officer) approves it, the cadre's SMS and WeChat message and the CAP document pushed to the
province (as CAP, and in the national platform's own form) name the township in words, residents
hear it, the public feed lists it; the officer
lowers it and ends it early with a reason; an officer of another township can neither see it nor
draft one outside their township."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from lxml import etree

from services.gateway.adapters.auth import create_operator
from services.ingest.adapters.divisions import DEFAULT_SOURCE, load_divisions
from shared.capxml import cap_schema, safe_parser
from shared.db import create_pool
from tests.e2e.test_cap_feed import links
from tests.e2e.test_warning_flow import login
from tests.helpers import eventually

CADRE, OPENID = "13900139101", "o-cadre-donghuamen"
DONGHUAMEN = "110101001000"
PLACE = "东城区东华门街道"


async def test_an_officers_warning_through_the_gateway(stack, database):
    pool = await create_pool(database)
    try:
        await load_divisions(pool, DEFAULT_SOURCE, prefixes=["110101"])
    finally:
        await pool.close()
    for name, roles, region in (
        ("duty", ["duty_officer"], "110101"),
        ("approver", ["approver"], "110101"),
        ("neighbour", ["duty_officer"], "110101002"),
    ):
        await create_operator(
            stack.gateway_pool,
            username=name,
            password=f"{name}-pass-123",
            roles=roles,
            region_prefix=region,
        )
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await login(c, "admin", stack.admin_password)
        duty = await login(c, "duty", "duty-pass-123")
        approver = await login(c, "approver", "approver-pass-123")
        neighbour = await login(c, "neighbour", "neighbour-pass-123")
        r = await c.post(
            "/api/v1/alerts/persons",
            json={
                "name": "东华门社区书记",
                "role": "village_cadre",
                "region_code": "110101001001",
                "phone": CADRE,
                "wechat_openid": OPENID,
                "subscriptions": [{"channels": ["sms", "wechat_mp"]}],
            },
            headers=duty,
        )
        assert r.status_code == 201, r.text
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
        r = await c.post(
            "/api/v1/alerts/subscriptions",
            json={
                "name": "national platform",
                "channel": "national_push",
                "target": f"{stack.fake}/national/province",
                "region_prefix": "110101",
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        csv = "\n".join(f"110101001001,1580001{i:04d}" for i in range(10))
        assert (await c.post("/api/v1/alerts/residents/import", content=csv, headers=admin)).json()[
            "stored"
        ] == 10

        draft = {
            "hazard": "rainstorm",
            "level": "red",
            "areas": [DONGHUAMEN],
            "expires": (datetime.now(UTC) + timedelta(hours=6)).isoformat(),
            "audience": "public",
        }
        r = await c.post(
            "/api/v1/alerts/warnings",
            json={**draft, "areas": [DONGHUAMEN]},
            headers=neighbour,
        )
        assert r.status_code == 403  # 东华门 is not the neighbour's township
        r = await c.post("/api/v1/alerts/warnings", json=draft, headers=duty)
        assert r.status_code == 201, r.text
        wid = r.json()["warning_id"]
        r = await c.post(f"/api/v1/alerts/warnings/{wid}/submit", headers=duty)
        request = r.json()
        assert request["state"] == "pending_approval"
        r = await c.post(
            f"/api/v1/alerts/warning-requests/{request['id']}/approve", json={}, headers=duty
        )
        assert r.status_code == 403
        r = await c.post(
            f"/api/v1/alerts/warning-requests/{request['id']}/approve",
            json={"reason": "会商同意"},
            headers=approver,
        )
        assert r.status_code == 200, r.text

        async def reached() -> Any:
            residents = sum(1 for n in stack.sms.per_number() if n.startswith("1580001"))
            wechat = stack.wechat.template_messages
            return (residents == 10 and CADRE in stack.sms.per_number() and wechat) or None

        (message,) = await eventually(reached, what="SMS, WeChat and residents")
        sms = [t["text"] for t in stack.sms.texts if CADRE in t.get("numbers", [CADRE])]
        assert any(f"{PLACE}发布暴雨红色预警（I级）" in t for t in sms), sms
        assert message["touser"] == OPENID
        assert message["data"]["first"]["value"] == f"{PLACE}发布暴雨红色预警（I级）"

        async def pushed() -> Any:
            return [m for m in stack.inbox.messages if m["provider"] == "platform"]

        (push,) = await eventually(pushed, what="the CAP push to the province")
        assert push["body"]["msg_type"] == "Alert"
        assert PLACE in push["body"]["area_desc"]

        async def national() -> Any:
            return [m for m in stack.inbox.messages if m["provider"] == "national"]

        # the same version in the national platform's own form, read back as ingest reads one
        (message,) = await eventually(national, what="the national-form push")
        assert (message["body"]["level"], message["body"]["region_codes"]) == ("red", [DONGHUAMEN])
        assert message["body"]["event"] == "暴雨"
        assert f"<areaDesc>{PLACE}</areaDesc>" in message["xml"]

        # the public feed lists it (approved with the version), and its document validates
        public = await c.get("/api/v1/alerts/public/cap/feed")
        (link,) = links(public.content)
        doc = etree.fromstring((await c.get(link)).content, safe_parser())
        assert cap_schema().validate(doc), cap_schema().error_log
        assert doc.findtext("{*}info/{*}area/{*}areaDesc") == PLACE

        # lowered to yellow (no approval at yellow), then ended early with a reason
        r = await c.post(
            f"/api/v1/alerts/warnings/{wid}/updates", json={"level": "yellow"}, headers=duty
        )
        assert (r.status_code, r.json()["state"]) == (201, "done")
        r = await c.post(f"/api/v1/alerts/warnings/{wid}/cancel", json={}, headers=duty)
        assert r.status_code == 422
        r = await c.post(
            f"/api/v1/alerts/warnings/{wid}/cancel",
            json={"reason": "降雨减弱，险情解除"},
            headers=duty,
        )
        assert r.status_code == 201, r.text

        async def ended() -> Any:
            texts = [t["text"] for t in stack.sms.texts]
            return any(f"{PLACE}暴雨预警解除" in t for t in texts)

        await eventually(ended, what="the all-clear SMS")
        w = (await c.get(f"/api/v1/alerts/warnings/{wid}", headers=duty)).json()
        assert [v["msg_type"] for v in w["versions"]] == ["Alert", "Update", "Cancel"]
        assert "降雨减弱，险情解除" in w["versions"][2]["description"]

        # the neighbour sees none of it
        assert (await c.get(f"/api/v1/alerts/warnings/{wid}", headers=neighbour)).status_code == 404
        r = await c.post(
            f"/api/v1/alerts/warnings/{wid}/cancel", json={"reason": "x"}, headers=neighbour
        )
        assert r.status_code == 404
