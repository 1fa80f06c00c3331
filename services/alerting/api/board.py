"""The 叫应 board: for each standing warning in the caller's region, who was asked to confirm,
by township, whether they have, and when the voice call (T1) and the escalation (T2) fall due."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from services.alerting.domain.states import STANDING
from shared.http import needs
from shared.identity import Identity


class BoardTask(BaseModel):
    id: int
    warning_id: str
    version: int
    level: int
    hazard: str
    area_desc: str | None = Field(description="the warning's area in words")
    person_id: int
    name: str
    role: str
    phone: str | None
    region_code: str
    township_code: str
    township_name: str = Field(description="the township in words (its code when unknown)")
    created_at: datetime
    confirmed_at: datetime | None
    confirmed_via: str | None
    voice_at: datetime | None = Field(description="when the voice call went out (T1)")
    voice_due_at: datetime = Field(description="when the call is due if still unconfirmed")
    escalated_at: datetime | None
    escalate_due_at: datetime = Field(description="when it goes up a level if unconfirmed (T2)")


def router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["confirmations"])

    @r.get("/confirmations/board", response_model=list[BoardTask])
    async def get_confirm_board(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
        warning_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> Any:
        """The current version's 叫应 tasks of every standing warning, unconfirmed first, by
        township then name."""
        settings = request.app.state.settings
        pool: asyncpg.Pool = request.app.state.runtime.pool
        rows = await pool.fetch(
            """SELECT t.id, t.warning_id, t.version, t.level, t.person_id, p.name, p.role,
                      p.phone, t.region_code, rpad(left(t.region_code, 9), 12, '0') AS township,
                      t.created_at, t.confirmed_at, t.confirmed_via, t.voice_at, t.escalated_at,
                      w.hazard, v.area_desc
                 FROM alerting.confirm_tasks t
                 JOIN alerting.warnings w ON w.id = t.warning_id AND w.version = t.version
                 JOIN alerting.warning_versions v
                   ON v.warning_id = t.warning_id AND v.version = t.version
                 JOIN alerting.persons p ON p.id = t.person_id
                WHERE w.state = ANY($3::text[]) AND t.region_code LIKE $1 || '%'
                  AND ($2::text IS NULL OR t.warning_id = $2)
                ORDER BY t.confirmed_at IS NOT NULL, township, p.name, t.id
                LIMIT $4""",
            identity.narrow(region_prefix),
            warning_id,
            list(STANDING),
            limit,
        )
        names = await request.app.state.places.describe_many({x["township"] for x in rows})
        t1 = timedelta(seconds=settings.confirm_voice_after_s)
        t2 = timedelta(seconds=settings.confirm_escalate_after_s)
        return [_task(x, names[x["township"]].name, t1, t2) for x in rows]

    return r


def _task(x: Any, township_name: str, t1: timedelta, t2: timedelta) -> dict[str, Any]:
    created: datetime = x["created_at"]
    return {
        **{k: x[k] for k in BoardTask.model_fields if k in x.keys()},  # noqa: SIM118
        "township_code": x["township"],
        "township_name": township_name,
        "voice_due_at": created + t1,
        "escalate_due_at": created + t2,
    }
