"""gateway's application factory: authenticate, sign the internal identity, route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from services.gateway.auth import Authenticator
from services.gateway.proxy import Route, forward, is_public, match
from services.gateway.settings import GatewaySettings
from shared.clock import Clock, SystemClock
from shared.db import create_pool, migrate, ping
from shared.errors import Unauthenticated, ValidationFailed
from shared.http import new_app, problem
from shared.identity import Identity, sign
from shared.logging import configure_logging

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: GatewaySettings, *, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    routes = [
        Route("/api/v1/ingest/", str(settings.ingest_url).rstrip("/"), "/v1/", "ingest"),
        Route("/api/v1/risk/", str(settings.risk_url).rstrip("/"), "/v1/risk/", "risk"),
        Route("/api/v1/alerts/", str(settings.alerting_url).rstrip("/"), "/v1/", "alerting"),
    ]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("gateway", settings.log_level)
        pool = await create_pool(settings.dsn, min_size=1, max_size=settings.db_pool_max)
        await migrate(pool, "gateway", MIGRATIONS)
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout_s, connect=3.0),
            limits=httpx.Limits(
                max_connections=settings.pool_size, max_keepalive_connections=settings.pool_size
            ),
        )
        app.state.pool = pool
        app.state.client = client
        app.state.auth = Authenticator(
            pool,
            jwt_secret=settings.jwt_secret,
            token_ttl_s=settings.access_token_ttl_s,
            key_cache_ttl_s=settings.key_cache_ttl_s,
        )
        app.state.checks["database"] = lambda: ping(pool)
        try:
            yield
        finally:
            await client.aclose()
            await pool.close()

    app = new_app(
        "gateway",
        title="Qianshao gateway",
        lifespan=lifespan,
        internal_secret=settings.internal_secret,
        clock=clock,
        settings=settings,
    )

    async def authenticate(request: Request) -> Identity:
        auth: Authenticator = request.app.state.auth
        key = request.headers.get("x-api-key")
        if key:
            return await auth.from_api_key(key, clock.now())
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            return auth.from_jwt(bearer[7:].strip(), clock.now())
        raise Unauthenticated("send an API key (X-API-Key) or a bearer token")

    @app.post("/api/v1/auth/token", tags=["auth"])
    async def token(request: Request) -> JSONResponse:
        """OAuth2 password flow (form-encoded ``username`` and ``password``)."""
        body = (await request.body()).decode("utf-8", "replace")
        form = parse_qs(body)
        username = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        if not username or not password:
            raise ValidationFailed("username and password are required (form-encoded)")
        result = await request.app.state.auth.login(username, password, clock.now())
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    @app.api_route(
        "/api/v1/{service}/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def proxy(request: Request, service: str, path: str) -> Response:
        found = match(routes, request.url.path)
        if found is None:
            return problem(404, f"no service {service!r}")
        route, upstream_path = found
        if is_public(request.url.path):
            return await forward(request.app.state.client, route, upstream_path, request, None)
        identity = await authenticate(request)
        signed = sign(identity, settings.internal_secret, clock.now())
        return await forward(request.app.state.client, route, upstream_path, request, signed)

    return app
