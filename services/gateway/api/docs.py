"""The merged OpenAPI document of every public path, and its Swagger UI."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from services.gateway.domain.openapi import merge
from services.gateway.domain.routes import Route

OPENAPI_TTL_S = 60.0


def router(routes: list[Route]) -> APIRouter:
    r = APIRouter(prefix="/api/v1", include_in_schema=False)

    @r.get("/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        """Every public path of every service, as the gateway serves it."""
        at, cached = request.app.state.openapi_cache
        if cached is None or time.monotonic() - at > OPENAPI_TTL_S:
            session: aiohttp.ClientSession = request.app.state.upstreams.session
            docs = await asyncio.gather(*(_fetch_openapi(session, route) for route in routes))
            cached = merge(request.app.openapi(), list(zip(routes, docs, strict=True)))
            if "x-unavailable" not in cached["info"]:
                request.app.state.openapi_cache = (time.monotonic(), cached)
        return JSONResponse(cached)

    @r.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/v1/openapi.json", title="Qianshao API")

    return r


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
