"""API-client administration: the upstream platforms' keys, shown once, rotated and revoked."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.adapters import auth as keys
from services.gateway.api.guard import Guard
from services.gateway.domain.credentials import ROLE_SCOPES
from services.gateway.settings import GatewaySettings
from shared.clock import Clock
from shared.errors import ValidationFailed

NO_STORE = {"Cache-Control": "no-store"}
ALL_SCOPES = sorted({s for v in ROLE_SCOPES.values() for s in v})
# the client routes are for a province-wide admin's bearer token
ADMIN_ONLY: dict[str, Any] = {"security": [{"operator": ["clients:write"]}]}


class NewClient(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,62}$")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")
    sources: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]] = Field(
        default_factory=list, max_length=100
    )
    region_prefix: str = Field(default="", pattern=r"^\d{0,12}$")
    scopes: list[Annotated[str, Field(json_schema_extra={"enum": ALL_SCOPES})]] = Field(
        default_factory=lambda: list(ROLE_SCOPES["upstream_platform"]), max_length=len(ALL_SCOPES)
    )
    require_signature: bool = False


class NewKey(BaseModel):
    client_id: str
    key_id: str
    key: str = Field(description="the API key itself, shown this once")


class RotatedKey(BaseModel):
    key_id: str
    key: str = Field(description="the new API key, shown this once")
    old_keys_expire_at: str | None = Field(description="when the older keys stop working")
    old_key_ids: list[str]


def router(guard: Guard, settings: GatewaySettings, clock: Clock) -> APIRouter:
    r = APIRouter(prefix="/api/v1/auth/clients", tags=["auth"])

    @r.get("", openapi_extra=ADMIN_ONLY)
    async def list_clients(request: Request) -> list[dict[str, Any]]:
        """API clients and their keys (ids, prefixes, expiry, last use; never a key)."""
        await guard.admin(request)
        return await keys.list_clients(request.app.state.pool)

    @r.post(
        "",
        status_code=201,
        openapi_extra=ADMIN_ONLY,
        response_model=NewKey,
        responses={409: {"description": "an API client of that id exists"}},
    )
    async def create_client(request: Request, body: NewClient) -> JSONResponse:
        """A new API client with its first key, shown once."""
        await guard.admin(request)
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
            headers=NO_STORE,
        )

    @r.post(
        "/{client_id}/keys", status_code=201, openapi_extra=ADMIN_ONLY, response_model=RotatedKey
    )
    async def add_client_key(request: Request, client_id: str) -> JSONResponse:
        """Rotate: a new key now; the client's older keys keep working for the overlap period."""
        await guard.admin(request)
        result = await keys.rotate_key(
            request.app.state.pool,
            client_id,
            overlap_s=settings.key_rotation_overlap_s,
            now=clock.now(),
        )
        request.app.state.auth.forget_cached()
        return JSONResponse(result, status_code=201, headers=NO_STORE)

    @r.delete("/{client_id}/keys/{key_id}", status_code=204, openapi_extra=ADMIN_ONLY)
    async def revoke_client_key(request: Request, client_id: str, key_id: str) -> Response:
        """Revoke one key at once (a leaked key): it stops working within the key cache's TTL."""
        await guard.admin(request)
        await keys.revoke_key(request.app.state.pool, client_id, key_id, clock.now())
        request.app.state.auth.forget_cached()
        return Response(status_code=204)

    return r
