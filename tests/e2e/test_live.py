"""The console's live stream through the gateway: refused without a credential; each operator
hears of the changes alerting commits in their own region, and of none elsewhere."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.gateway.adapters.auth import create_operator
from tests.e2e.test_auth import assert_problem
from tests.e2e.test_warning_flow import login


async def changes(r: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The ``change`` events of a server-sent event stream, as they come."""
    event, data = "", []
    async for line in r.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line:
            if event == "change":
                yield json.loads("\n".join(data))
            elif event == "hello":
                yield {"kind": "hello", **json.loads("\n".join(data))}
            event, data = "", []


async def next_change(stream: AsyncIterator[dict[str, Any]], kind: str) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for change in stream:
            if change["kind"] == kind:
                return change
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(first(), 20)


def draft(area: str) -> dict[str, Any]:
    return {
        "hazard": "rainstorm",
        "level": "yellow",
        "areas": [area],
        "expires": (datetime.now(UTC) + timedelta(hours=3)).isoformat(),
    }


async def test_each_operator_hears_of_their_own_region(stack):
    await create_operator(
        stack.gateway_pool,
        username="east",
        password="east-pass-123",
        roles=["duty_officer"],
        region_prefix="110101",
    )
    await create_operator(
        stack.gateway_pool,
        username="west",
        password="west-pass-123",
        roles=["viewer"],
        region_prefix="120101",
    )
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        r = await c.get("/api/v1/events")
        assert_problem(r, 401)
        admin = await login(c, "admin", stack.admin_password)
        east = await login(c, "east", "east-pass-123")
        west = await login(c, "west", "west-pass-123")
        async with (
            c.stream("GET", "/api/v1/events", headers=east) as east_r,
            c.stream("GET", "/api/v1/events", headers=west) as west_r,
        ):
            assert east_r.status_code == 200
            assert east_r.headers["content-type"].startswith("text/event-stream")
            east_changes, west_changes = changes(east_r), changes(west_r)
            # hello: every change from here on is heard
            assert (await next_change(east_changes, "hello"))["listening"] is True
            assert (await next_change(west_changes, "hello"))["listening"] is True

            r = await c.post("/api/v1/alerts/warnings", json=draft("110101001000"), headers=east)
            assert r.status_code == 201, r.text
            east_id = r.json()["warning_id"]
            got = await next_change(east_changes, "warning")
            assert got["warnings"] == [east_id]

            r = await c.post("/api/v1/alerts/warnings", json=draft("120101001000"), headers=admin)
            assert r.status_code == 201, r.text
            west_id = r.json()["warning_id"]
            # the west's first warning change is its own: the east's draft never reached it
            got = await next_change(west_changes, "warning")
            assert got["warnings"] == [west_id]
