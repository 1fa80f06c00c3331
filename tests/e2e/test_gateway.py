"""The gateway's own features against the running stack: API-key rotation with an overlap and
revocation, signed requests (a replay, a tampered body and a stale timestamp are refused),
rotating refresh tokens with reuse detection, rate limits that hold across two gateway replicas,
the circuit breaker, body limits, CORS and the merged OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.gateway.app import create_app
from services.gateway.domain.signing import sign_request
from services.gateway.settings import GatewaySettings
from shared.clock import ManualClock
from shared.devstack.inprocess import serve
from shared.devstack.procs import free_port
from tests.e2e.test_auth import assert_problem, token
from tests.e2e.test_slice import STATION

READING = {
    "source": "city-platform",
    "readings": [
        {
            "station_id": STATION["id"],
            "metric": "water_level",
            "unit": "m",
            "ts": "2026-07-20T08:00:00+00:00",
            "value": 1.2,
        }
    ],
}


async def _client(c: httpx.AsyncClient, admin: dict[str, str], **extra: Any) -> dict[str, Any]:
    r = await c.post(
        "/api/v1/auth/clients",
        json={
            "id": f"platform-{secrets.token_hex(3)}",
            "name": "Provincial platform",
            "sources": ["city-platform"],
            "region_prefix": "110101",
            **extra,
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_key_rotation_keeps_the_old_key_for_the_overlap_and_revocation_ends_it(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await token(c, "admin", stack.admin_password)
        assert (await c.post("/api/v1/ingest/stations", json=STATION, headers=admin)).is_success
        created = await _client(c, admin)
        old = {"X-API-Key": created["key"]}
        assert (
            await c.post("/api/v1/ingest/readings", json=READING, headers=old)
        ).status_code == 202

        r = await c.post(f"/api/v1/auth/clients/{created['client_id']}/keys", headers=admin)
        assert r.status_code == 201, r.text
        rotated = r.json()
        assert rotated["old_key_ids"] == [created["key_id"]]
        expires = datetime.fromisoformat(rotated["old_keys_expire_at"])
        assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
        new = {"X-API-Key": rotated["key"]}
        for headers in (old, new):  # both work during the overlap
            r = await c.post("/api/v1/ingest/readings", json=READING, headers=headers)
            assert r.status_code == 202, r.text

        listed = (await c.get("/api/v1/auth/clients", headers=admin)).json()
        [mine] = [x for x in listed if x["id"] == created["client_id"]]
        assert [k["key_id"] for k in mine["keys"]] == [created["key_id"], rotated["key_id"]]
        assert all(k["last_used_at"] for k in mine["keys"])
        assert created["key"] not in str(listed)
        assert rotated["key"] not in str(listed)

        r = await c.delete(
            f"/api/v1/auth/clients/{created['client_id']}/keys/{created['key_id']}", headers=admin
        )
        assert r.status_code == 204
        assert_problem(await c.post("/api/v1/ingest/readings", json=READING, headers=old), 401)
        r = await c.post("/api/v1/ingest/readings", json=READING, headers=new)
        assert r.status_code == 202

        # only a province-wide admin manages clients
        assert_problem(await c.get("/api/v1/auth/clients", headers=new), 403)


async def test_signed_requests_refuse_replays_tampering_and_stale_clocks(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await token(c, "admin", stack.admin_password)
        assert (await c.post("/api/v1/ingest/stations", json=STATION, headers=admin)).is_success
        created = await _client(c, admin, require_signature=True)
        body = httpx.Request("POST", "http://x", json=READING).read()
        path = "/api/v1/ingest/readings"

        def signed(payload: bytes, *, at: int | None = None, nonce: str | None = None) -> dict:
            return {
                "Content-Type": "application/json",
                "Authorization": sign_request(
                    created["key"],
                    created["key_id"],
                    "POST",
                    path,
                    "",
                    payload,
                    at or int(datetime.now(UTC).timestamp()),
                    nonce or secrets.token_hex(12),
                ),
            }

        # a client that must sign may not send its key bare
        assert_problem(await c.post(path, json=READING, headers={"X-API-Key": created["key"]}), 401)
        headers = signed(body)
        r = await c.post(path, content=body, headers=headers)
        assert r.status_code == 202, r.text
        r = await c.post(path, content=body, headers=headers)  # the same request again
        assert_problem(r, 401)
        assert "replayed" in r.json()["detail"]
        tampered = body.replace(b"1.2", b"9.9")
        assert tampered != body
        assert_problem(await c.post(path, content=tampered, headers=signed(body)), 401)
        stale = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
        assert_problem(await c.post(path, content=body, headers=signed(body, at=stale)), 401)
        # a GET is signed over an empty body and its query
        query = "station_id=WL-001&metric=water_level"
        auth = sign_request(
            created["key"],
            created["key_id"],
            "GET",
            "/api/v1/ingest/stations",
            query,
            b"",
            int(datetime.now(UTC).timestamp()),
            secrets.token_hex(12),
        )
        r = await c.get(f"/api/v1/ingest/stations?{query}", headers={"Authorization": auth})
        assert r.status_code == 200, r.text


async def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_family(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        r = await c.post(
            "/api/v1/auth/token", data={"username": "admin", "password": stack.admin_password}
        )
        first = r.json()
        assert first["refresh_token"].startswith("qsr_")
        r = await c.post(
            "/api/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
        assert r.status_code == 200, r.text
        second = r.json()
        assert second["refresh_token"] != first["refresh_token"]
        bearer = {"Authorization": f"Bearer {second['access_token']}"}
        assert (await c.get("/api/v1/alerts/warnings", headers=bearer)).status_code == 200

        # the first token again: somebody copied it. Its whole family is revoked.
        r = await c.post(
            "/api/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
        assert_invalid_grant(r)
        r = await c.post(
            "/api/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
        )
        assert_invalid_grant(r)

        third = (
            await c.post(
                "/api/v1/auth/token", data={"username": "admin", "password": stack.admin_password}
            )
        ).json()
        assert (
            await c.post("/api/v1/auth/revoke", data={"token": third["refresh_token"]})
        ).is_success
        r = await c.post(
            "/api/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": third["refresh_token"]},
        )
        assert_invalid_grant(r)


def assert_invalid_grant(r: httpx.Response) -> None:
    """A refused grant, as RFC 6749 (section 5.2) answers it."""
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_grant"
    assert r.headers["cache-control"] == "no-store"


@contextlib.asynccontextmanager
async def gateways(
    stack, database: str, n: int, clock: ManualClock, **kw: Any
) -> AsyncIterator[list[str]]:
    urls = {f"{n}_url": stack.services[n] for n in ("ingest", "risk", "alerting")}
    settings = GatewaySettings(database_url=database, **{**urls, **kw})
    async with contextlib.AsyncExitStack() as es:
        urls = [
            await es.enter_async_context(serve(create_app(settings, clock=clock), free_port()))
            for _ in range(n)
        ]
        yield urls


async def test_rate_limit_holds_across_two_gateway_replicas(stack, database):
    clock = ManualClock(datetime.now(UTC).replace(second=5, microsecond=0))
    limits = {"ingest:read": 40}
    async with gateways(stack, database, 2, clock, rate_limits=limits) as (a, b):
        key = {"X-API-Key": stack.api_key}
        async with httpx.AsyncClient(timeout=30) as c:
            statuses = []
            for i in range(60):
                r = await c.get(f"{(a, b)[i % 2]}/api/v1/ingest/stations", headers=key)
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert_problem(r, 429)
                    assert 1 <= int(r.headers["Retry-After"]) <= 55
            admitted = statuses.count(200)
            # one replica alone would admit 40, two without shared state 60; tokens reserved and
            # not spent by one replica (at most a block of 2 each) are the only slack
            assert 36 <= admitted <= 40, statuses
            assert statuses.count(429) == 60 - admitted
            clock.advance(60)  # the next window
            r = await c.get(f"{a}/api/v1/ingest/stations", headers=key)
            assert r.status_code == 200


async def test_breaker_opens_on_a_dead_service_and_bodies_are_capped(stack, database):
    clock = ManualClock(datetime.now(UTC))
    dead = f"http://127.0.0.1:{free_port()}"
    async with gateways(
        stack,
        database,
        1,
        clock,
        breaker_threshold=3,
        breaker_open_s=30,
        max_body_bytes=4096,
        cors_origins=["https://duty.example.gov.cn"],
    ) as (gw,):
        key = {"X-API-Key": stack.api_key}
        async with httpx.AsyncClient(base_url=gw, timeout=30) as c:
            big = {"source": "city-platform", "readings": [READING["readings"][0]] * 200}
            assert_problem(await c.post("/api/v1/ingest/readings", json=big, headers=key), 413)

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(10):
                    yield b" " * 1000

            r = await c.post(
                "/api/v1/ingest/readings",
                content=chunks(),
                headers={**key, "Content-Type": "application/json"},
            )
            assert_problem(r, 413)
            r = await c.options(
                "/api/v1/ingest/stations",
                headers={
                    "Origin": "https://duty.example.gov.cn",
                    "Access-Control-Request-Method": "GET",
                },
            )
            assert r.headers["access-control-allow-origin"] == "https://duty.example.gov.cn"
            r = await c.options(
                "/api/v1/ingest/stations",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            )
            assert "access-control-allow-origin" not in r.headers

    async with gateways(
        stack, database, 1, clock, risk_url=dead, breaker_threshold=3, breaker_open_s=30
    ) as (gw,):
        admin_hdr = None
        async with httpx.AsyncClient(base_url=gw, timeout=30) as c:
            admin_hdr = await token(c, "admin", stack.admin_password)
            for _ in range(3):
                assert_problem(await c.get("/api/v1/risk/stations", headers=admin_hdr), 502)
            r = await c.get("/api/v1/risk/stations", headers=admin_hdr)
            assert_problem(r, 503)
            assert 1 <= int(r.headers["Retry-After"]) <= 30
            # the other services are not affected
            assert (await c.get("/api/v1/ingest/stations", headers=admin_hdr)).status_code == 200


async def test_merged_openapi_lists_every_service_under_public_paths(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        r = await c.get("/api/v1/openapi.json")
        assert r.status_code == 200
        doc = r.json()
        paths = set(doc["paths"])
        for expected in (
            "/api/v1/ingest/readings",
            "/api/v1/ingest/stations",
            "/api/v1/alerts/warnings",
            "/api/v1/auth/token",
            "/api/v1/auth/clients",
        ):
            assert expected in paths, expected
        assert any(p.startswith("/api/v1/risk/") for p in paths)
        assert all(p.startswith("/api/v1/") for p in paths)
        assert set(doc["components"]["securitySchemes"]) == {"apiKey", "signedRequest", "operator"}
        refs = {
            v.rsplit("/", 1)[-1]
            for v in _values(doc["paths"], "$ref")
            if v.startswith("#/components/schemas/")
        }
        assert refs <= set(doc["components"]["schemas"])
        assert "x-unavailable" not in doc["info"]
        docs = await c.get("/api/v1/docs")
        assert docs.status_code == 200
        assert "/api/v1/openapi.json" in docs.text
        # Swagger UI is the project's own copy: every script, style and icon the page names is
        # served by the gateway, and nothing on it points at another host
        urls = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert len(urls) >= 3, urls
        assert not [u for u in urls if "//" in u], urls
        assert "validatorUrl" in docs.text
        kinds = {}
        for url in urls:
            asset = await c.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 500, url
            kinds[url.rsplit(".", 1)[-1]] = asset.headers["content-type"].split(";")[0]
        assert kinds == {"js": "text/javascript", "css": "text/css", "png": "image/png"}
        unknown = await c.get("/api/v1/docs/assets/..%2F..%2Fapp.py")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")


def _values(node: Any, key: str) -> list[str]:
    if isinstance(node, dict):
        out = [v for k, v in node.items() if k == key and isinstance(v, str)]
        for v in node.values():
            out += _values(v, key)
        return out
    if isinstance(node, list):
        return [x for item in node for x in _values(item, key)]
    return []


INJECTIONS = [
    "' OR '1'='1",
    "1' OR 1=1--",
    "'; DROP TABLE ingest.stations; --",
    "x' UNION SELECT id, name FROM gateway.operators--",
    "%27%20OR%201%3D1",
    "\\x00",
]


async def test_injection_probes_change_nothing_and_leak_nothing(stack):
    """Classic SQL injection strings in every kind of parameter, sent with a key scoped to one
    county: never a 5xx, never a row of another county, and the tables are intact."""
    other = {**STATION, "id": "WL-OTHER", "region_code": "120101001001"}
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await token(c, "admin", stack.admin_password)
        for st in (STATION, other):
            assert (await c.post("/api/v1/ingest/stations", json=st, headers=admin)).is_success
        key = {"X-API-Key": stack.api_key}  # region 110101
        seen: list[str] = []
        for probe in INJECTIONS:
            for method, url, kw in (
                ("GET", "/api/v1/ingest/stations", {"params": {"after": probe}}),
                ("GET", "/api/v1/ingest/stations", {"params": {"region_prefix": probe}}),
                ("GET", f"/api/v1/ingest/stations/{probe}", {}),
                ("GET", f"/api/v1/ingest/stations/{probe}/series", {"params": {"metric": probe}}),
                ("GET", "/api/v1/alerts/warnings", {"params": {"region_prefix": probe}}),
                ("GET", "/api/v1/risk/stations", {"params": {"region_prefix": probe}}),
                (
                    "POST",
                    "/api/v1/ingest/readings",
                    {
                        "json": {
                            **READING,
                            "readings": [{**READING["readings"][0], "station_id": probe}],
                        }
                    },
                ),
            ):
                r = await c.request(method, url, headers=key, **kw)
                assert r.status_code < 500, (probe, url, r.text)
                seen.append(r.text)
        assert not any("WL-OTHER" in text or "120101001001" in text for text in seen)
        r = await c.get("/api/v1/ingest/stations", headers=admin)
        assert {s["id"] for s in r.json()} >= {"WL-001", "WL-OTHER"}
        assert (
            await c.post("/api/v1/auth/token", data={"username": "admin' --", "password": "x"})
        ).json()["error"] == "invalid_grant"


async def test_a_slow_client_times_out_without_holding_up_others(stack, database):
    clock = ManualClock(datetime.now(UTC))
    async with gateways(stack, database, 1, clock, body_timeout_s=1.0) as (gw,):
        host, port = gw.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            (
                "POST /api/v1/ingest/readings HTTP/1.1\r\n"
                f"Host: {host}\r\nX-API-Key: {stack.api_key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{"
            ).encode()
        )
        await writer.drain()
        started = asyncio.get_running_loop().time()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(20):
                    await asyncio.sleep(0.25)
                    writer.write(b" ")
                    await writer.drain()

        dripping = asyncio.create_task(trickle())
        async with httpx.AsyncClient(base_url=gw, timeout=30) as c:
            # meanwhile another client is served
            r = await c.get("/api/v1/ingest/stations", headers={"X-API-Key": stack.api_key})
            assert r.status_code == 200
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        elapsed = asyncio.get_running_loop().time() - started
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"application/problem+json" in head
        assert elapsed < 4
        dripping.cancel()
        writer.close()
