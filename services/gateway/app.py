"""gateway's wiring: the pool and the service connections, the authenticator and the rate limits,
and the routes — operators' tokens, API-client administration, the merged OpenAPI document, and
the one proxy route to the services (``services/gateway/api``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import yarl
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

from services.gateway.adapters.auth import Authenticator
from services.gateway.adapters.live import LiveHub
from services.gateway.adapters.ratelimit import postgres_reserve, purge
from services.gateway.adapters.upstreams import BodyTimeout, BodyTooLarge, Upstreams
from services.gateway.api import clients, console, docs, live, proxy, tokens
from services.gateway.api.guard import Guard, Limited
from services.gateway.domain.ratelimit import Leases
from services.gateway.domain.routes import Route
from services.gateway.settings import GatewaySettings
from shared.clock import Clock, SystemClock
from shared.http import new_app as base_app
from shared.http import problem
from shared.logging import configure_logging
from shared.periodic import Periodic
from shared.runtime import start_runtime

# idle connections to the services are dropped from the pool after this; the services keep theirs
# open longer (shared.http.KEEP_ALIVE_S), so the pool never reuses one being closed
POOL_KEEPALIVE_S = 30.0

MIGRATIONS = Path(__file__).parent / "migrations"


def service_routes(settings: GatewaySettings) -> list[Route]:
    return [
        Route("/api/v1/ingest/", str(settings.ingest_url).rstrip("/"), "/v1/", "ingest"),
        Route("/api/v1/risk/", str(settings.risk_url).rstrip("/"), "/v1/risk/", "risk"),
        Route("/api/v1/alerts/", str(settings.alerting_url).rstrip("/"), "/v1/", "alerting"),
    ]


def create_app(settings: GatewaySettings, *, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    routes = service_routes(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("gateway", settings.log_level)
        rt = await start_runtime(settings, schema="gateway", migrations=MIGRATIONS, broker=False)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.pool_size, keepalive_timeout=POOL_KEEPALIVE_S
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        app.state.pool = rt.pool
        app.state.upstreams = Upstreams(
            session,
            aiohttp.ClientTimeout(total=settings.upstream_timeout_s, sock_connect=3.0),
            retries=settings.upstream_retries,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
            threshold=settings.breaker_threshold,
            open_s=settings.breaker_open_s,
            public_base=yarl.URL(settings.public_base_url) if settings.public_base_url else None,
        )
        auth = app.state.auth = Authenticator(
            rt.pool,
            jwt_secret=settings.jwt_secret,
            token_ttl_s=settings.access_token_ttl_s,
            key_cache_ttl_s=settings.key_cache_ttl_s,
            refresh_ttl_s=settings.refresh_token_ttl_s,
            signature_skew_s=settings.signature_skew_s,
        )
        app.state.limits = Leases(postgres_reserve(rt.pool))
        app.state.openapi_cache = (0.0, None)
        app.state.checks.update(await rt.checks())

        async def housekeeping() -> None:
            now = clock.now()
            await purge(rt.pool, now)
            await auth.purge_nonces(now)

        janitor = Periodic("gateway housekeeping", 60.0, housekeeping)
        rt.run_task(janitor.run, "gateway-housekeeping", janitor.stop)
        hub = app.state.live = LiveHub(lambda: asyncpg.connect(settings.dsn))
        rt.run_task(hub.run, "gateway-live", hub.stop)
        try:
            yield
        finally:
            await rt.close()
            await session.close()

    app = base_app(
        "gateway",
        title="Qianshao gateway",
        lifespan=lifespan,
        internal_secret=settings.internal_secret,
        clock=clock,
        settings=settings,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    _problems(app, settings)
    guard = Guard(settings, clock)
    app.include_router(tokens.router(guard, settings, clock))
    app.include_router(clients.router(guard, settings, clock))
    app.include_router(docs.router(routes))
    app.include_router(live.router(guard, settings))
    app.include_router(console.router(settings))
    proxy.install(app, routes, guard, proxy.Signer(settings.internal_secret), clock)
    return app


def _problems(app: FastAPI, settings: GatewaySettings) -> None:
    """The gateway's own refusals, as problem documents."""

    @app.exception_handler(Limited)
    async def on_limited(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Limited)
        return problem(
            429,
            f"more than {exc.per_min} requests a minute; try again later",
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(BodyTooLarge)
    async def on_too_large(request: Request, exc: Exception) -> Response:
        return problem(413, f"the body is larger than {settings.max_body_bytes} bytes")

    @app.exception_handler(BodyTimeout)
    async def on_slow_body(request: Request, exc: Exception) -> Response:
        return problem(408, f"the body did not arrive within {settings.body_timeout_s:g} s")
