"""The CAP feeds through the gateway, as a client reaches them: every link a feed gives is the
gateway's public address and returns its document there (valid against the OASIS schema); the
public feed needs no credential and carries a warning only once its release to the public was
approved — never an internal alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from lxml import etree

from services.gateway.adapters.auth import create_operator
from shared.capxml import cap_schema, safe_parser
from tests.e2e.test_slice import STATION, login
from tests.helpers import eventually

ATOM = {"a": "http://www.w3.org/2005/Atom"}


def links(feed: bytes) -> list[str]:
    doc = etree.fromstring(feed, safe_parser())
    return [
        str(x.get("href"))
        for x in doc.iterfind("a:entry/a:link", ATOM)
        if x.get("type") == "application/cap+xml"
    ]


def valid_cap(body: bytes) -> etree._Element:
    doc = etree.fromstring(body, safe_parser())
    assert cap_schema().validate(doc), cap_schema().error_log
    return doc


async def test_feed_links_work_through_the_gateway_and_the_public_feed_is_public_only(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await login(c, stack.admin_password)
        assert (await c.post("/api/v1/ingest/stations", json=STATION, headers=admin)).is_success
        now = datetime.now(UTC).replace(microsecond=0)
        r = await c.post(
            "/api/v1/ingest/readings",
            json={
                "source": "city-platform",
                "readings": [
                    {
                        "station_id": STATION["id"],
                        "metric": "water_level",
                        "ts": (now - timedelta(minutes=1)).isoformat(),
                        "value": 4.9,
                        "unit": "m",
                    }
                ],
            },
            headers={"X-API-Key": stack.api_key},
        )
        assert r.status_code == 202, r.text

        async def warning() -> Any:
            r = await c.get("/api/v1/alerts/warnings", headers=admin)
            return r.json() or None

        [w] = await eventually(warning, timeout_s=60, what="the warning")

        # the operators' feed: its links are the gateway's, and they answer there
        feed = await c.get("/api/v1/alerts/cap/feed", headers=admin)
        assert feed.status_code == 200
        [link] = links(feed.content)
        assert link.startswith(f"{stack.gateway}/api/v1/alerts/cap/"), link
        assert ":8003" not in link
        doc = await c.get(link, headers=admin)
        assert doc.status_code == 200
        assert valid_cap(doc.content).findtext("{*}identifier") == w["identifier"]

        # the public feed: no credential, and nothing until a release is approved
        public = await c.get("/api/v1/alerts/public/cap/feed")
        assert public.status_code == 200
        assert links(public.content) == []
        hidden = await c.get(f"/api/v1/alerts/public/cap/{w['identifier']}.xml")
        assert hidden.status_code == 404

        r = await c.post(f"/api/v1/alerts/warnings/{w['id']}/publication", json={}, headers=admin)
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        await create_operator(
            stack.gateway_pool, username="approver", password="approve-4-eyes", roles=["approver"]
        )
        r = await c.post(
            "/api/v1/auth/token", data={"username": "approver", "password": "approve-4-eyes"}
        )
        approver = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await c.post(f"/api/v1/alerts/publications/{pid}/approve", json={}, headers=approver)
        assert r.status_code == 200, r.text

        public = await c.get("/api/v1/alerts/public/cap/feed")
        [link] = links(public.content)
        assert link.startswith(f"{stack.gateway}/api/v1/alerts/public/cap/"), link
        doc = await c.get(link)  # no credential
        assert doc.status_code == 200
        cap = valid_cap(doc.content)
        assert cap.findtext("{*}identifier") == w["identifier"]
        assert cap.findtext("{*}scope") == "Public"
