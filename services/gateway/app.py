"""gateway's application factory: authenticate, authorise, rate-limit, sign the internal
identity, route; and the operators' token endpoints, API-client administration and the merged
OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from services.gateway import auth as keys
from services.gateway.auth import ROLE_SCOPES, Authenticator
from services.gateway.openapi import merge
from services.gateway.proxy import (
    BodyTimeout,
    BodyTooLarge,
    Route,
    Upstreams,
    forward,
    is_public,
    match,
    read_body,
    too_large,
)
from services.gateway.ratelimit import Leases, postgres_reserve, purge
from services.gateway.settings import GatewaySettings
from services.gateway.signing import SCHEME
from shared.clock import Clock, SystemClock
from shared.db import create_pool, migrate, ping
from shared.errors import PermissionDenied, Unauthenticated, ValidationFailed
from shared.http import new_app as base_app
from shared.http import problem
from shared.identity import Identity, sign
from shared.logging import configure_logging
from shared.periodic import Periodic

# idle connections to the services are dropped from the pool after this; the services keep theirs
# open longer (shared.http.KEEP_ALIVE_S), so the pool never reuses one being closed
POOL_KEEPALIVE_S = 30.0

MIGRATIONS = Path(__file__).parent / "migrations"
OPENAPI_TTL_S = 60.0


class NewClient(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,62}$")
    name: str = Field(min_length=1, max_length=200)
    sources: list[str] = Field(default_factory=list, max_length=100)
    region_prefix: str = Field(default="", pattern=r"^\d{0,12}$")
    scopes: list[str] = Field(default_factory=lambda: list(ROLE_SCOPES["upstream_platform"]))
    require_signature: bool = False


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
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.pool_size, keepalive_timeout=POOL_KEEPALIVE_S
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        app.state.pool = pool
        app.state.upstreams = Upstreams(
            session,
            aiohttp.ClientTimeout(total=settings.upstream_timeout_s, sock_connect=3.0),
            retries=settings.upstream_retries,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
            threshold=settings.breaker_threshold,
            open_s=settings.breaker_open_s,
        )
        app.state.auth = Authenticator(
            pool,
            jwt_secret=settings.jwt_secret,
            token_ttl_s=settings.access_token_ttl_s,
            key_cache_ttl_s=settings.key_cache_ttl_s,
            refresh_ttl_s=settings.refresh_token_ttl_s,
            signature_skew_s=settings.signature_skew_s,
        )
        app.state.limits = Leases(postgres_reserve(pool))
        app.state.openapi_cache = (0.0, None)
        app.state.checks["database"] = lambda: ping(pool)

        async def housekeeping() -> None:
            now = clock.now()
            await purge(pool, now)
            await app.state.auth.purge_nonces(now)

        janitor = Periodic("gateway housekeeping", 60.0, housekeeping)
        task = asyncio.create_task(janitor.run())
        try:
            yield
        finally:
            janitor.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await session.close()
            await pool.close()

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

    async def limit(request: Request, key: str, route_class: str) -> None:
        per_min = settings.rate_limits.get(route_class)
        if per_min is None:
            return
        decision = await request.app.state.limits.check(
            f"{key}|{route_class}", per_min, clock.now()
        )
        if not decision.allowed:
            raise _Limited(decision.retry_after_s, per_min)

    async def authenticate(request: Request, *, signed_body: bool) -> tuple[Identity, bytes | None]:
        """The caller and, for a signed request, the body the signature covered."""
        auth: Authenticator = request.app.state.auth
        key = request.headers.get("x-api-key")
        if key:
            return await auth.from_api_key(key, clock.now()), None
        header = request.headers.get("authorization", "")
        if header.startswith(SCHEME + " "):
            if too_large(request, settings.max_body_bytes):
                raise BodyTooLarge
            body = (
                await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
                if signed_body
                else b""
            )
            ident = await auth.from_signature(
                header,
                method=request.method,
                path=request.scope["path"],
                query=request.scope.get("query_string", b"").decode("latin-1"),
                body=body,
                now=clock.now(),
            )
            return ident, body
        if header.lower().startswith("bearer "):
            return auth.from_jwt(header[7:].strip(), clock.now()), None
        raise Unauthenticated("send an API key (X-API-Key), a signed request or a bearer token")

    def admin(identity: Identity) -> None:
        identity.require_scope("clients:write")
        if identity.region_prefix:
            raise PermissionDenied("API clients are managed by a province-wide admin")

    @app.exception_handler(_Limited)
    async def on_limited(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Limited)
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

    @app.post("/api/v1/auth/token", tags=["auth"])
    async def token(request: Request) -> JSONResponse:
        """OAuth2 token endpoint (form-encoded): ``grant_type=password`` with ``username`` and
        ``password``, or ``grant_type=refresh_token`` with ``refresh_token``."""
        await limit(request, _client_address(request), "auth:token")
        if too_large(request, 64 << 10):
            raise BodyTooLarge
        form = parse_qs(
            (await read_body(request, 64 << 10, settings.body_timeout_s)).decode("utf-8", "replace")
        )

        def field(name: str) -> str:
            return (form.get(name) or [""])[0]

        grant = field("grant_type") or "password"
        auth: Authenticator = request.app.state.auth
        if grant == "password":
            if not field("username") or not field("password"):
                raise ValidationFailed("username and password are required (form-encoded)")
            result = await auth.login(field("username"), field("password"), clock.now())
        elif grant == "refresh_token":
            if not field("refresh_token"):
                raise ValidationFailed("refresh_token is required")
            result = await auth.refresh(field("refresh_token"), clock.now())
        else:
            raise ValidationFailed("grant_type must be password or refresh_token")
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    @app.post("/api/v1/auth/revoke", tags=["auth"], status_code=200)
    async def revoke(request: Request) -> JSONResponse:
        """Sign out (RFC 7009): the refresh token and every token rotated from it stop working."""
        await limit(request, _client_address(request), "auth:token")
        form = parse_qs(
            (await read_body(request, 64 << 10, settings.body_timeout_s)).decode("utf-8", "replace")
        )
        token_value = (form.get("token") or [""])[0]
        if token_value:
            await request.app.state.auth.revoke(token_value, clock.now())
        return JSONResponse({}, headers={"Cache-Control": "no-store"})

    @app.get("/api/v1/auth/clients", tags=["auth"])
    async def clients(request: Request) -> list[dict[str, Any]]:
        """API clients and their keys (ids, prefixes, expiry, last use; never a key)."""
        identity, _ = await authenticate(request, signed_body=False)
        admin(identity)
        return await keys.list_clients(request.app.state.pool)

    @app.post("/api/v1/auth/clients", tags=["auth"], status_code=201)
    async def new_client(request: Request, body: NewClient) -> JSONResponse:
        """A new API client with its first key, shown once."""
        identity, _ = await authenticate(request, signed_body=False)
        admin(identity)
        unknown = set(body.scopes) - {s for v in ROLE_SCOPES.values() for s in v}
        if unknown:
            raise ValidationFailed(f"unknown scopes: {sorted(unknown)}")
        key_id, key = await keys.create_api_client(
            request.app.state.pool,
            client_id=body.id,
            name=body.name,
            scopes=body.scopes,
            sources=body.sources,
            region_prefix=body.region_prefix,
            require_signature=body.require_signature,
        )
        return JSONResponse(
            {"client_id": body.id, "key_id": key_id, "key": key},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    @app.post("/api/v1/auth/clients/{client_id}/keys", tags=["auth"], status_code=201)
    async def rotate(request: Request, client_id: str) -> JSONResponse:
        """Rotate: a new key now; the client's older keys keep working for the overlap period."""
        identity, _ = await authenticate(request, signed_body=False)
        admin(identity)
        result = await keys.rotate_key(
            request.app.state.pool,
            client_id,
            overlap_s=settings.key_rotation_overlap_s,
            now=clock.now(),
        )
        request.app.state.auth.forget_cached()
        return JSONResponse(result, status_code=201, headers={"Cache-Control": "no-store"})

    @app.delete("/api/v1/auth/clients/{client_id}/keys/{key_id}", tags=["auth"], status_code=204)
    async def revoke_key(request: Request, client_id: str, key_id: str) -> Response:
        """Revoke one key at once (a leaked key): it stops working within the key cache's TTL."""
        identity, _ = await authenticate(request, signed_body=False)
        admin(identity)
        await keys.revoke_key(request.app.state.pool, client_id, key_id, clock.now())
        request.app.state.auth.forget_cached()
        return Response(status_code=204)

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        """Every public path of every service, as the gateway serves it."""
        at, cached = request.app.state.openapi_cache
        if cached is None or time.monotonic() - at > OPENAPI_TTL_S:
            session: aiohttp.ClientSession = request.app.state.upstreams.session
            docs = await asyncio.gather(*(_fetch_openapi(session, r) for r in routes))
            cached = merge(app.openapi(), list(zip(routes, docs, strict=True)))
            if "x-unavailable" not in cached["info"]:
                request.app.state.openapi_cache = (time.monotonic(), cached)
        return JSONResponse(cached)

    @app.get("/api/v1/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/v1/openapi.json", title="Qianshao API")

    signer = _Signer(settings.internal_secret)

    async def proxy(request: Request) -> Response:
        # the path as the client encoded it, passed on as is (a decoded path may hold bytes that
        # are no URL: %16, %0A)
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        found = match(routes, raw.decode("latin-1"))
        if found is None:
            service = request.scope["path"].split("/")[3]
            return problem(404, f"no service {service!r}")
        route, upstream_path = found
        up: Upstreams = request.app.state.upstreams
        if is_public(request.scope["path"]):
            await limit(request, _client_address(request), f"{route.name}:public")
            return await forward(up, route, upstream_path, request, None)
        identity, body = await authenticate(request, signed_body=True)
        write = request.method not in ("GET", "HEAD")
        await limit(request, identity.subject, f"{route.name}:{'write' if write else 'read'}")
        return await forward(
            up, route, upstream_path, request, signer.header(identity, clock), body
        )

    # a plain Starlette route: FastAPI's parameter machinery has nothing to do for a proxy and
    # cost a tenth of its time (bench/gateway.py)
    app.add_route(
        "/api/v1/{service}/{path:path}",
        proxy,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )

    return app


class _Signer:
    """The signed identity header, reused for a third of its lifetime per identity: signing
    (JSON and HMAC) on every request cost more than the proxy's own routing."""

    TTL_S = 60
    REUSE_S = 20.0

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._cache: dict[tuple[Any, ...], tuple[float, str]] = {}

    def header(self, identity: Identity, clock: Clock) -> str:
        key = (
            identity.subject,
            identity.region_prefix,
            tuple(identity.roles),
            tuple(identity.scopes),
            tuple(identity.sources),
        )
        mono = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > mono:
            return hit[1]
        if len(self._cache) > 10_000:
            self._cache.clear()
        signed = sign(identity, self._secret, clock.now(), ttl_s=self.TTL_S)
        self._cache[key] = (mono + self.REUSE_S, signed)
        return signed


class _Limited(Exception):
    def __init__(self, retry_after_s: int, per_min: int) -> None:
        self.retry_after_s = retry_after_s
        self.per_min = per_min


def _client_address(request: Request) -> str:
    return f"ip:{request.client.host if request.client else '?'}"


async def _fetch_openapi(session: aiohttp.ClientSession, route: Route) -> dict[str, Any] | None:
    try:
        async with session.get(
            route.upstream + "/openapi.json", timeout=aiohttp.ClientTimeout(total=5)
        ) as r:
            r.raise_for_status()
            doc: dict[str, Any] = await r.json()
            return doc
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
