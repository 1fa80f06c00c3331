"""The authentication and authorisation matrix at the gateway and behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jwt

from services.gateway.adapters.auth import create_operator
from services.gateway.settings import DEV_JWT_SECRET
from shared.identity import Identity, sign

PROBLEM = "application/problem+json"


async def token(c: httpx.AsyncClient, user: str, password: str) -> dict[str, str]:
    r = await c.post("/api/v1/auth/token", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def assert_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert "Traceback" not in r.text


async def test_credentials_matrix(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        assert_problem(await c.get("/api/v1/alerts/warnings"), 401)
        assert_problem(
            await c.get("/api/v1/alerts/warnings", headers={"X-API-Key": "qs_wrong"}), 401
        )
        wrong = await c.post("/api/v1/auth/token", data={"username": "admin", "password": "nope"})
        assert wrong.status_code == 400  # RFC 6749 section 5.2
        assert wrong.json()["error"] == "invalid_grant"
        now = datetime.now(UTC)
        expired = jwt.encode(
            {
                "sub": "admin",
                "roles": ["admin"],
                "region": "",
                "typ": "access",
                "exp": int((now - timedelta(minutes=1)).timestamp()),
            },
            DEV_JWT_SECRET,
            algorithm="HS256",
        )
        assert_problem(
            await c.get("/api/v1/alerts/warnings", headers={"Authorization": f"Bearer {expired}"}),
            401,
        )
        good = (await token(c, "admin", stack.admin_password))["Authorization"]
        head, payload, sig = good.split(" ")[1].split(".")
        tampered = f"{head}.{payload}.{sig[:-2]}AA"
        assert_problem(
            await c.get("/api/v1/alerts/warnings", headers={"Authorization": f"Bearer {tampered}"}),
            401,
        )
        forged = jwt.encode(
            {
                "sub": "admin",
                "roles": ["admin"],
                "region": "",
                "typ": "access",
                "exp": int((now + timedelta(minutes=5)).timestamp()),
            },
            "an attacker's own key of 32 bytes!!",
            algorithm="HS256",
        )
        assert_problem(
            await c.get("/api/v1/alerts/warnings", headers={"Authorization": f"Bearer {forged}"}),
            401,
        )
        # an upstream key may push but not read warnings or write stations
        key = {"X-API-Key": stack.api_key}
        assert_problem(await c.get("/api/v1/alerts/warnings", headers=key), 403)
        assert_problem(
            await c.post(
                "/api/v1/ingest/stations",
                headers=key,
                json={"id": "X", "name": "x", "kind": "rain_gauge", "region_code": "110101001001"},
            ),
            403,
        )
        # and only as its own source
        r = await c.post(
            "/api/v1/ingest/readings", headers=key, json={"source": "someone-else", "readings": []}
        )
        assert_problem(r, 403)
        assert_problem(await c.get("/api/v1/nowhere/x", headers=key), 404)


async def test_services_refuse_calls_that_bypass_the_gateway(stack):
    url = stack.services["alerting"] + "/v1/warnings"
    async with httpx.AsyncClient(timeout=10) as c:
        assert_problem(await c.get(url), 401)
        fake_identity = Identity(subject="me", kind="operator", roles=["admin"])
        forged = sign(fake_identity, "not-the-internal-secret-at-all-x", datetime.now(UTC))
        assert_problem(await c.get(url, headers={"X-Qianshao-Identity": forged}), 401)
        assert (await c.get(stack.services["alerting"] + "/healthz")).status_code == 200


async def test_region_scope_hides_other_regions(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await token(c, "admin", stack.admin_password)
        for sid, region in (
            ("S-A", "110101001001"),
            ("S-B", "110101002001"),
            ("S-OUT", "120101001001"),
        ):
            r = await c.post(
                "/api/v1/ingest/stations",
                headers=admin,
                json={"id": sid, "name": sid, "kind": "water_level", "region_code": region},
            )
            assert r.status_code == 201, r.text
        # the city key is scoped to 110101: a reading for a station outside is refused per item
        r = await c.post(
            "/api/v1/ingest/readings",
            headers={"X-API-Key": stack.api_key},
            json={
                "source": "city-platform",
                "readings": [
                    {
                        "station_id": "S-A",
                        "metric": "water_level",
                        "ts": "2026-07-01T08:00:00+08:00",
                        "value": 1.0,
                        "unit": "m",
                    },
                    {
                        "station_id": "S-OUT",
                        "metric": "water_level",
                        "ts": "2026-07-01T08:00:00+08:00",
                        "value": 1.0,
                        "unit": "m",
                    },
                ],
            },
        )
        assert r.status_code == 202
        assert r.json()["accepted"] == 1
        assert r.json()["rejected"] == [{"index": 1, "reason": "station is outside your region"}]


async def test_township_officer_sees_only_the_township(stack, database):
    import asyncpg

    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        await create_operator(
            pool,
            username="township",
            password="township-pass",
            roles=["duty_officer"],
            region_prefix="110101002",
        )
    finally:
        await pool.close()
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await token(c, "admin", stack.admin_password)
        officer = await token(c, "township", "township-pass")
        for sid, region in (("T-A", "110101001001"), ("T-B", "110101002001")):
            r = await c.post(
                "/api/v1/ingest/stations",
                headers=admin,
                json={"id": sid, "name": sid, "kind": "water_level", "region_code": region},
            )
            assert r.status_code == 201
        r = await c.get("/api/v1/ingest/stations", headers=officer)
        assert [s["id"] for s in r.json()] == ["T-B"]
        r = await c.get(
            "/api/v1/ingest/stations", headers=officer, params={"region_prefix": "110101001"}
        )
        assert [s["id"] for s in r.json()] == ["T-B"]  # cannot widen its own scope
        assert_problem(await c.get("/api/v1/ingest/stations/T-A", headers=officer), 403)
        assert (await c.get("/api/v1/ingest/stations/T-B", headers=officer)).status_code == 200
        assert_problem(
            await c.post(
                "/api/v1/ingest/stations",
                headers=officer,
                json={
                    "id": "T-C",
                    "name": "c",
                    "kind": "rain_gauge",
                    "region_code": "110101002002",
                },
            ),
            403,
        )


async def test_two_credentials_are_refused_whichever_is_bad(stack):
    """One credential per request: a bad API key beside a good token (or a good one beside
    it, or an empty key) is a 401, never served on the strength of the other."""
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        bearer = await token(c, "admin", stack.admin_password)
        assert (await c.get("/api/v1/alerts/warnings", headers=bearer)).status_code == 200
        for key in ("qs_wrong", "", stack.api_key):
            r = await c.get("/api/v1/alerts/warnings", headers={**bearer, "X-API-Key": key})
            assert_problem(r, 401)
            assert "one credential" in r.json()["detail"]
        r = await c.get(
            "/api/v1/ingest/stations",
            headers={"X-API-Key": stack.api_key, "Authorization": "Bearer not-a-token"},
        )
        assert_problem(r, 401)
        assert_problem(await c.get("/api/v1/ingest/stations", headers={"X-API-Key": ""}), 401)
        assert (
            await c.get("/api/v1/ingest/stations", headers={"X-API-Key": stack.api_key})
        ).status_code == 200


async def test_the_token_endpoint_answers_as_rfc_6749_says(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        cases = [
            ({"username": "admin", "password": "nope"}, "invalid_grant"),
            ({"grant_type": "password", "username": "admin"}, "invalid_request"),
            ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
            ({"grant_type": "refresh_token", "refresh_token": "qsr_unknown"}, "invalid_grant"),
        ]
        for form, error in cases:
            r = await c.post("/api/v1/auth/token", data=form)
            assert r.status_code == 400, (form, r.text)
            assert r.headers["content-type"].startswith("application/json")
            assert r.headers["cache-control"] == "no-store"
            assert r.json()["error"] == error
            assert r.json()["error_description"]
        r = await c.post(
            "/api/v1/auth/token", data={"username": "admin", "password": stack.admin_password}
        )
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        assert r.json()["token_type"] == "bearer"
        r = await c.post("/api/v1/auth/revoke", data={})
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_request"


async def test_an_undeclared_method_is_a_405_that_names_the_allowed_ones(stack):
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        bearer = await token(c, "admin", stack.admin_password)
        r = await c.put("/api/v1/auth/token")
        assert_problem(r, 405)
        assert r.headers["allow"] == "POST"
        r = await c.put("/api/v1/auth/clients", headers=bearer)
        assert_problem(r, 405)
        assert r.headers["allow"] == "GET, POST"
        # through the proxy: the service answers, with every method of the path
        r = await c.patch("/api/v1/alerts/persons", headers=bearer)
        assert_problem(r, 405)
        assert r.headers["allow"] == "GET, POST"
        r = await c.request("OPTIONS", "/api/v1/ingest/stations/WL-1", headers=bearer)
        assert_problem(r, 405)
        assert r.headers["allow"] == "DELETE, GET, PUT"
