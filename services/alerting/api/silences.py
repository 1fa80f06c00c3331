"""alerting's HTTP API for silences and stations in maintenance."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.alerting.adapters.audit import audit
from shared.api_types import Instant
from shared.errors import NotFound, ValidationFailed
from shared.http import RowId, needs
from shared.identity import Identity


class SilenceIn(BaseModel):
    station_id: str | None = Field(default=None, max_length=64)
    region_prefix: str | None = Field(default=None, pattern=r"^\d{1,12}$")
    hazard: str | None = Field(default=None, max_length=64)
    starts_at: Instant | None = Field(default=None, description="default: now")
    ends_at: Instant
    reason: str = Field(min_length=1, max_length=500)

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["station_id"], "properties": {"station_id": {"type": "string"}}},
                {
                    "required": ["region_prefix"],
                    "properties": {"region_prefix": {"type": "string"}},
                },
                {"required": ["hazard"], "properties": {"hazard": {"type": "string"}}},
            ]
        }
    )

    @model_validator(mode="after")
    def _some_matcher(self) -> SilenceIn:
        if self.station_id is None and self.region_prefix is None and self.hazard is None:
            raise ValueError("a silence needs a station, a region prefix or a hazard")
        return self


class SilenceOut(BaseModel):
    id: int
    station_id: str | None
    region_prefix: str | None
    hazard: str | None
    starts_at: datetime
    ends_at: datetime
    author: str
    reason: str


class MaintenanceIn(BaseModel):
    ends_at: Instant
    reason: str = Field(min_length=1, max_length=500)


class MaintenanceOut(MaintenanceIn):
    station_id: str
    starts_at: datetime
    author: str


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["silences"])

    @r.post("/silences", status_code=201, response_model=SilenceOut)
    async def create_silence(
        body: SilenceIn, identity: Annotated[Identity, needs("silences:write")], request: Request
    ) -> Any:
        """Holds back notifications of matching warning versions until ``ends_at``. A silence
        on a region must lie inside the caller's region; one without a region needs the
        caller's scope to be everything."""
        identity.require_region(body.region_prefix or "")
        if body.region_prefix is None and identity.region_prefix:
            raise ValidationFailed("give a region prefix inside your region")
        now = request.app.state.clock.now()
        starts = body.starts_at or now
        if body.ends_at <= starts:
            raise ValidationFailed("ends_at must be after starts_at")
        pool = _pool(request)
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO alerting.silences
                       (station_id, region_prefix, hazard, starts_at, ends_at, author, reason)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   RETURNING id, station_id, region_prefix, hazard, starts_at, ends_at, author,
                             reason""",
                body.station_id,
                body.region_prefix,
                body.hazard,
                starts,
                body.ends_at,
                identity.subject,
                body.reason,
            )
            assert row is not None
            await audit(
                conn,
                identity.subject,
                "silence.create",
                {"silence_id": row["id"], "reason": body.reason},
            )
        return dict(row.items())

    @r.get("/silences", response_model=list[SilenceOut])
    async def list_silences(
        identity: Annotated[Identity, needs("silences:read")], request: Request, active: bool = True
    ) -> Any:
        rows = await _pool(request).fetch(
            """SELECT id, station_id, region_prefix, hazard, starts_at, ends_at, author, reason
                 FROM alerting.silences
                WHERE coalesce(region_prefix, '') LIKE $1 || '%'
                  AND (NOT $2 OR ends_at > $3)
                ORDER BY starts_at DESC LIMIT 500""",
            identity.region_prefix,
            active,
            request.app.state.clock.now(),
        )
        return [dict(x.items()) for x in rows]

    @r.delete("/silences/{silence_id}", status_code=204)
    async def expire_silence(
        silence_id: RowId, identity: Annotated[Identity, needs("silences:write")], request: Request
    ) -> None:
        """Ends the silence now; what it held back goes out at the next sweep."""
        pool = _pool(request)
        now = request.app.state.clock.now()
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT region_prefix FROM alerting.silences WHERE id = $1 FOR UPDATE", silence_id
            )
            if row is None or not identity.can_see_region(row["region_prefix"] or ""):
                raise NotFound(f"no silence {silence_id}")
            await conn.execute(
                """UPDATE alerting.silences SET ends_at = greatest(starts_at + interval '1 us', $2)
                    WHERE id = $1 AND ends_at > $2""",
                silence_id,
                now,
            )
            await audit(conn, identity.subject, "silence.expire", {"silence_id": silence_id})

    @r.put("/stations/{station_id}/maintenance", response_model=MaintenanceOut)
    async def start_maintenance(
        station_id: str,
        body: MaintenanceIn,
        identity: Annotated[Identity, needs("silences:write")],
        request: Request,
    ) -> Any:
        """Puts a station in maintenance until ``ends_at``: its readings raise no warning.
        Stations are registered with ingest, so their regions are not known here: this takes
        a caller whose scope is every region."""
        identity.require_region("")
        now = request.app.state.clock.now()
        if body.ends_at <= now:
            raise ValidationFailed("ends_at must be in the future")
        row = await _pool(request).fetchrow(
            """INSERT INTO alerting.maintenance (station_id, starts_at, ends_at, author, reason)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (station_id) DO UPDATE
                  SET starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,
                      author = EXCLUDED.author, reason = EXCLUDED.reason
               RETURNING station_id, starts_at, ends_at, author, reason""",
            station_id,
            now,
            body.ends_at,
            identity.subject,
            body.reason,
        )
        return dict(row.items()) if row is not None else None

    @r.get("/maintenance", response_model=list[MaintenanceOut])
    async def list_maintenance(
        identity: Annotated[Identity, needs("silences:read")], request: Request
    ) -> Any:
        """Stations in maintenance now, the soonest to end first. Their regions are ingest's,
        so, like starting one, this is for callers whose scope is every region."""
        identity.require_region("")
        rows = await _pool(request).fetch(
            """SELECT station_id, starts_at, ends_at, author, reason FROM alerting.maintenance
                WHERE ends_at > $1 ORDER BY ends_at, station_id""",
            request.app.state.clock.now(),
        )
        return [dict(x.items()) for x in rows]

    @r.delete("/stations/{station_id}/maintenance", status_code=204)
    async def end_maintenance(
        station_id: str, identity: Annotated[Identity, needs("silences:write")], request: Request
    ) -> None:
        identity.require_region("")
        await _pool(request).execute(
            "DELETE FROM alerting.maintenance WHERE station_id = $1", station_id
        )

    return r
