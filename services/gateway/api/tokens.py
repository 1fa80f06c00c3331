"""The operators' OAuth2 token endpoint and sign-out."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.adapters.auth import Authenticator
from services.gateway.adapters.upstreams import BodyTooLarge, read_body, too_large
from services.gateway.api.guard import Guard, client_address
from services.gateway.settings import GatewaySettings
from shared.clock import Clock
from shared.errors import ValidationFailed

FORM_LIMIT = 64 << 10


def router(guard: Guard, settings: GatewaySettings, clock: Clock) -> APIRouter:
    r = APIRouter(prefix="/api/v1/auth", tags=["auth"])

    async def form(request: Request) -> dict[str, list[str]]:
        if too_large(request, FORM_LIMIT):
            raise BodyTooLarge
        body = await read_body(request, FORM_LIMIT, settings.body_timeout_s)
        return parse_qs(body.decode("utf-8", "replace"))

    @r.post("/token")
    async def token(request: Request) -> JSONResponse:
        """OAuth2 token endpoint (form-encoded): ``grant_type=password`` with ``username`` and
        ``password``, or ``grant_type=refresh_token`` with ``refresh_token``."""
        await guard.limit(request, client_address(request), "auth:token")
        fields = await form(request)

        def field(name: str) -> str:
            return (fields.get(name) or [""])[0]

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

    @r.post("/revoke", status_code=200)
    async def revoke(request: Request) -> JSONResponse:
        """Sign out (RFC 7009): the refresh token and every token rotated from it stop working."""
        await guard.limit(request, client_address(request), "auth:token")
        token_value = ((await form(request)).get("token") or [""])[0]
        if token_value:
            await request.app.state.auth.revoke(token_value, clock.now())
        return JSONResponse({}, headers={"Cache-Control": "no-store"})

    return r
