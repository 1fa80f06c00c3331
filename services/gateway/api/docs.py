"""The merged OpenAPI document of every public path, and its Swagger UI."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response

from services.gateway.domain.openapi import merge
from services.gateway.domain.routes import Route
from shared.http import problem

OPENAPI_TTL_S = 60.0
# Swagger UI's files, bundled from the pinned swagger-ui-dist by scripts/assets.sh: the page loads
# nothing from another host (a government intranet has none to reach)
STATIC = Path(__file__).parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
ASSET_PREFIX = "/api/v1/docs/assets/"


def router(routes: list[Route]) -> APIRouter:
    r = APIRouter(prefix="/api/v1", include_in_schema=False)

    @r.get("/openapi.json")
    async def get_openapi(request: Request) -> JSONResponse:
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
    async def get_docs() -> Response:
        missing = [name for name in ASSETS if not (STATIC / name).is_file()]
        if missing:
            return _not_bundled(missing)
        return get_swagger_ui_html(
            openapi_url="/api/v1/openapi.json",
            title="Qianshao API",
            swagger_js_url=ASSET_PREFIX + "swagger-ui-bundle.js",
            swagger_css_url=ASSET_PREFIX + "swagger-ui.css",
            swagger_favicon_url=ASSET_PREFIX + "favicon-32x32.png",
            # no validator badge: it would send the document to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )

    @r.get("/docs/assets/{name}")
    async def get_docs_asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            return problem(404, f"no page asset {name!r}")
        path = STATIC / name
        if not path.is_file():
            return _not_bundled([name])
        return FileResponse(
            path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
        )

    return r


def _not_bundled(missing: list[str]) -> Response:
    return problem(
        503,
        "the gateway's page assets are not bundled ("
        + ", ".join(missing)
        + "); run scripts/assets.sh, which make setup runs",
    )


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
