"""The gateway's pure parts: the signature scheme, rate-limit leases shared by replicas, the
circuit breaker and the OpenAPI merge."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.app import POOL_KEEPALIVE_S
from services.gateway.domain import signing
from services.gateway.domain.breaker import Breaker
from services.gateway.domain.openapi import merge
from services.gateway.domain.ratelimit import Leases, block_size
from services.gateway.domain.routes import Route
from shared.errors import Unauthenticated
from shared.http import KEEP_ALIVE_S

KEY = "qs_example-key"
T0 = 1_790_000_000


def _verify(header: str, body: bytes, now: float, query: str = "a=1&b=2") -> None:
    signing.verify(
        signing.parse(header),
        hashlib.sha256(KEY.encode()).digest(),
        method="POST",
        path="/api/v1/ingest/readings",
        query=query,
        body=body,
        now_s=now,
        skew_s=300,
    )


def _header(body: bytes, ts: int = T0, query: str = "b=2&a=1") -> str:
    return signing.sign_request(
        KEY, "k_abcdefgh12", "POST", "/api/v1/ingest/readings", query, body, ts, "n" * 20
    )


def test_a_signature_verifies_and_the_query_order_does_not_matter():
    _verify(_header(b'{"x":1}'), b'{"x":1}', T0 + 10)
    assert signing.canonical_query("b=2&a=1&a=0") == "a=0&a=1&b=2"
    assert signing.canonical_query("q=%E6%B0%B4 位") == "q=%E6%B0%B4%20%E4%BD%8D"


@pytest.mark.parametrize(
    ("body", "now", "query"),
    [
        (b'{"x":2}', T0, "a=1&b=2"),  # another body
        (b'{"x":1}', T0 + 301, "a=1&b=2"),  # too late
        (b'{"x":1}', T0 - 301, "a=1&b=2"),  # from the future
        (b'{"x":1}', T0, "a=1&b=3"),  # another query
    ],
)
def test_anything_changed_or_stale_is_refused(body, now, query):
    with pytest.raises(Unauthenticated):
        _verify(_header(b'{"x":1}'), body, now, query)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "QS1-HMAC-SHA256 KeyId=k_1,Timestamp=1,Nonce=short,Signature=00",
        "QS1-HMAC-SHA256 KeyId=k_1,Timestamp=x,Nonce=" + "n" * 20 + ",Signature=00",
        "QS1-HMAC-SHA256 KeyId=k_1,KeyId=k_2,Timestamp=1,Nonce=" + "n" * 20 + ",Signature=00",
        "QS1-HMAC-SHA256 KeyId=k_1,Timestamp=1",
    ],
)
def test_malformed_headers_are_refused(header):
    with pytest.raises(Unauthenticated):
        signing.parse(header)


class SharedWindow:
    """The upsert of postgres_reserve, in memory: grants never sum past the limit."""

    def __init__(self) -> None:
        self.used: dict[tuple[str, datetime], int] = {}

    async def reserve(self, key: str, window: datetime, block: int, limit: int) -> int:
        await asyncio.sleep(0)
        used = self.used.get((key, window), 0)
        new = min(used + block, limit)
        self.used[(key, window)] = new
        return new - used


@given(
    limit=st.integers(1, 300),
    replicas=st.integers(1, 5),
    calls=st.lists(st.integers(0, 4), min_size=1, max_size=400),
)
def test_replicas_never_admit_more_than_the_limit_together(limit, replicas, calls):
    store = SharedWindow()
    leases = [Leases(store.reserve) for _ in range(replicas)]
    now = datetime(2026, 7, 1, 8, 0, 10, tzinfo=UTC)

    async def run() -> int:
        admitted = 0
        for i in calls:
            d = await leases[i % replicas].check("client:a|ingest:write", limit, now)
            admitted += d.allowed
        return admitted

    admitted = asyncio.run(run())
    assert admitted <= limit
    # the only slack: tokens a replica reserved and has not spent yet
    if len(calls) >= limit + replicas * block_size(limit):
        assert admitted >= limit - replicas * (block_size(limit) - 1)


def test_a_limited_call_says_when_the_window_ends_and_the_next_window_admits():
    store = SharedWindow()
    leases = Leases(store.reserve)
    t = datetime(2026, 7, 1, 8, 0, 45, tzinfo=UTC)

    async def run() -> None:
        for _ in range(3):
            assert (await leases.check("k", 3, t)).allowed
        refused = await leases.check("k", 3, t)
        assert not refused.allowed
        assert refused.retry_after_s == 15
        assert (await leases.check("k", 3, t + timedelta(seconds=15))).allowed
        assert (await leases.check("other", 3, t)).allowed  # keys are independent

    asyncio.run(run())


def test_breaker_opens_after_a_run_of_failures_and_half_opens_for_one_trial():
    b = Breaker(threshold=3, open_s=10)
    for t in (0.0, 1.0):
        assert b.allow(t)
        b.record(False, t)
    b.record(True, 1.5)  # a success resets the run
    for t in (2.0, 3.0, 4.0):
        assert b.allow(t)
        b.record(False, t)
    assert b.state == "open"
    assert not b.allow(5.0)
    assert b.retry_after(5.0) == 9
    assert b.allow(14.0)  # half-open: one trial
    assert not b.allow(14.1)  # and only one
    b.record(False, 14.2)
    assert b.state == "open"
    assert not b.allow(20.0)
    assert b.allow(24.3)
    b.record(True, 24.4)
    assert b.state == "closed"
    assert b.allow(24.5)


def test_openapi_merge_moves_paths_and_renames_clashing_schemas():
    gateway = {
        "info": {"version": "0.1.0"},
        "paths": {"/api/v1/auth/token": {"post": {}}, "/healthz": {"get": {}}},
        "components": {"schemas": {}},
    }
    ingest = {
        "paths": {
            "/v1/readings": {
                "post": {"requestBody": {"$ref": "#/components/schemas/Batch"}, "responses": {}}
            },
            "/healthz": {"get": {}},
        },
        "components": {"schemas": {"Batch": {"type": "object"}, "Page": {"type": "array"}}},
    }
    alerting = {
        "paths": {
            "/v1/warnings": {"get": {"responses": {"200": {"$ref": "#/components/schemas/Page"}}}},
            "/v1/confirm/{token}": {"get": {"responses": {}}},
        },
        "components": {"schemas": {"Page": {"type": "object"}}},
    }
    routes = [
        Route("/api/v1/ingest/", "http://i", "/v1/", "ingest"),
        Route("/api/v1/alerts/", "http://a", "/v1/", "alerting"),
        Route("/api/v1/risk/", "http://r", "/v1/risk/", "risk"),
    ]
    doc = merge(gateway, [(routes[0], ingest), (routes[1], alerting), (routes[2], None)])
    assert set(doc["paths"]) == {
        "/api/v1/auth/token",
        "/api/v1/ingest/readings",
        "/api/v1/alerts/warnings",
        "/api/v1/alerts/confirm/{token}",
    }
    warnings = doc["paths"]["/api/v1/alerts/warnings"]["get"]
    assert warnings["responses"]["200"]["$ref"] == "#/components/schemas/alerting.Page"
    assert doc["components"]["schemas"]["alerting.Page"] == {"type": "object"}
    assert doc["components"]["schemas"]["Page"] == {"type": "array"}
    assert warnings["security"]
    assert doc["paths"]["/api/v1/alerts/confirm/{token}"]["get"]["security"] == []
    assert doc["info"]["x-unavailable"] == ["risk"]


def test_each_operation_states_its_credentials_and_scopes():
    """From the scopes a service declares on its internal identity: an operator's token with
    those scopes, and an API key (or a signed request) where an upstream platform holds them."""
    alerting = {
        "paths": {
            "/v1/warnings": {
                "get": {
                    "operationId": "list_warnings",
                    "security": [{"identity": ["warnings:read"]}],
                }
            },
        },
    }
    ingest = {
        "paths": {
            "/v1/readings": {
                "post": {
                    "operationId": "push_readings",
                    "security": [{"identity": ["readings:write"]}],
                }
            },
            "/v1/warnings": {
                "get": {"operationId": "list_warnings", "security": [{"identity": []}]}
            },
        },
    }
    routes = [
        Route("/api/v1/ingest/", "http://i", "/v1/", "ingest"),
        Route("/api/v1/alerts/", "http://a", "/v1/", "alerting"),
    ]
    doc = merge({"paths": {}}, [(routes[1], alerting), (routes[0], ingest)])
    warnings = doc["paths"]["/api/v1/alerts/warnings"]["get"]
    assert warnings["security"] == [{"operator": ["warnings:read"]}]
    push = doc["paths"]["/api/v1/ingest/readings"]["post"]
    assert push["security"] == [
        {"apiKey": ["readings:write"]},
        {"signedRequest": ["readings:write"]},
        {"operator": ["readings:write"]},
    ]
    # two services with an operation of one name: the second is told apart by its service
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert doc["paths"]["/api/v1/ingest/warnings"]["get"]["operationId"] == "ingest_list_warnings"
    flows = doc["components"]["securitySchemes"]["operator"]["flows"]["password"]
    assert "warnings:read" in flows["scopes"]
    assert "duty_officer" in flows["scopes"]["warnings:read"]
    assert "OAuthError" in doc["components"]["schemas"]


def test_services_keep_idle_connections_longer_than_the_gateway_pools_them():
    # otherwise the gateway may send on a connection the service is closing at that moment,
    # and a POST (never retried) comes back 502
    assert POOL_KEEPALIVE_S + 15 <= KEEP_ALIVE_S
