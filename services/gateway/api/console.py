"""The duty officers' console at ``/console/``: the page and its assets, built at set-up from
``services/gateway/console`` (scripts/assets.sh) into ``static/console``. Every response carries a
content security policy that lets the page reach this host alone, so nothing it loads or sends can
leave it; an online base map is allowed only when one is configured."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from services.gateway.settings import GatewaySettings
from shared.http import problem

DIST = Path(__file__).parent / "static" / "console"
TIANDITU = "https://*.tianditu.gov.cn"


def policy(settings: GatewaySettings) -> str:
    tiles = f" {TIANDITU}" if settings.tianditu_key else ""
    return (
        "default-src 'self'; "
        f"img-src 'self' data: blob:{tiles}; "
        # Leaflet positions its panes with style attributes
        "style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; font-src 'self'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )


def router(settings: GatewaySettings, dist: Path = DIST) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    headers = {
        "Content-Security-Policy": policy(settings),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    root = dist.resolve()

    @r.get("/console")
    async def console_root() -> Response:
        return RedirectResponse("/console/", status_code=308)

    @r.get("/console/config.json")
    async def console_config() -> Response:
        """What the page needs to know of this installation (an online base map's key)."""
        return JSONResponse(
            {"tianditu_key": settings.tianditu_key},
            headers={**headers, "Cache-Control": "no-store"},
        )

    @r.get("/console/{path:path}")
    async def console_file(path: str) -> Response:
        index = root / "index.html"
        if not index.is_file():
            return problem(
                503, "the console is not built; run scripts/assets.sh, which make setup runs"
            )
        target = (root / path).resolve()
        if path and target.is_file() and target.is_relative_to(root):
            # Vite names the built files by content: they never change under one name
            cache = (
                "public, max-age=31536000, immutable" if path.startswith("assets/") else "no-cache"
            )
            return FileResponse(target, headers={**headers, "Cache-Control": cache})
        if path.startswith("assets/"):
            return problem(404, f"no console asset {path!r}")
        # any other path is a page of the console: its router shows it
        return FileResponse(
            index, media_type="text/html", headers={**headers, "Cache-Control": "no-cache"}
        )

    return r
