"""The one route to the services: ``/api/v1/<service>/…``, authenticated, rate-limited and
signed with the internal identity, then forwarded."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from services.gateway.adapters.upstreams import Upstreams, forward
from services.gateway.api.guard import Guard, client_address
from services.gateway.domain.routes import Route, is_public, match
from shared.clock import Clock
from shared.http import allowed_methods, problem
from shared.identity import Identity, sign


class Signer:
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


def install(app: FastAPI, routes: list[Route], guard: Guard, signer: Signer, clock: Clock) -> None:
    async def proxy(request: Request) -> Response:
        # the path as the client encoded it, passed on as is (a decoded path may hold bytes that
        # are no URL: %16, %0A)
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        found = match(routes, raw.decode("latin-1"))
        if found is None:
            allowed = allowed_methods(request.app, request.scope["path"])
            if allowed:
                return problem(
                    405,
                    f"{request.method} is not allowed here; use {', '.join(allowed)}",
                    headers={"Allow": ", ".join(allowed)},
                )
            service = request.scope["path"].split("/")[3]
            return problem(404, f"no service {service!r}")
        route, upstream_path = found
        up: Upstreams = request.app.state.upstreams
        if is_public(request.scope["path"]):
            await guard.limit(request, client_address(request), f"{route.name}:public")
            return await forward(up, route, upstream_path, request, None)
        identity, body = await guard.authenticate(request, signed_body=True)
        write = request.method not in ("GET", "HEAD")
        await guard.limit(request, identity.subject, f"{route.name}:{'write' if write else 'read'}")
        return await forward(
            up, route, upstream_path, request, signer.header(identity, clock), body
        )

    # a plain Starlette route: FastAPI's parameter machinery has nothing to do for a proxy and
    # cost a tenth of its time (bench/gateway.py)
    app.add_route(
        "/api/v1/{service}/{path:path}",
        proxy,
        # OPTIONS too: an undeclared method is answered by the service, or for the gateway's own
        # paths here, with a 405 that lists the methods the path has
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
