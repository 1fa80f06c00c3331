"""alerting's HTTP API for the warnings a duty officer issues: drafts, the requests that issue,
update and cancel a warning, and their approval by a second person."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, JsonValue

from services.alerting.adapters import requests as desk_store
from services.alerting.domain.lifecycle import HAZARD_CN
from services.alerting.domain.officer import Content
from services.alerting.pipeline.officer import Changes, Desk
from shared.api_types import Instant
from shared.contracts import ActiveLevelName, Level
from shared.db import Conn
from shared.errors import NotFound, PermissionDenied
from shared.http import RowId, needs
from shared.identity import Identity

Code = Annotated[str, Field(pattern=r"^\d{12}$", description="12-digit division code")]
Headline = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(min_length=1, max_length=4000)]
Polygon = Annotated[
    str,
    Field(
        min_length=1,
        max_length=20_000,
        description="CAP polygon: 'lat,lon' pairs separated by spaces, four at least, the first "
        "repeated last (WGS 84)",
    ),
]

REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {"description": "an area outside your region, or approving your own request"},
    404: {"description": "no such warning or request in your region"},
    409: {"description": "the warning or request is not in a state that allows this"},
    422: {"description": "the content breaks a rule (named in the problem's detail)"},
}


class DraftIn(BaseModel):
    hazard: str = Field(
        min_length=1,
        max_length=64,
        description="the hazard: rainstorm, flood, geohazard …",
        json_schema_extra={"enum": list[JsonValue](sorted(HAZARD_CN))},
    )
    level: ActiveLevelName
    areas: list[Code] = Field(min_length=1, max_length=500)
    polygon: Polygon | None = None
    expires: Instant = Field(description="when it stops being valid unless continued")
    effective: Instant | None = Field(default=None, description="default: when issued")
    headline: Headline | None = Field(default=None, description="default: the template's")
    description: Text | None = Field(default=None, description="default: the template's")
    instruction: Text | None = Field(default=None, description="default: the hazard's")
    event_type: str | None = Field(
        default=None,
        pattern=r"^\d{2}[A-Z]\d{2,3}$",
        description="GB/T 35965.1 event type (11B03 rainstorm …); default: the hazard's, if known",
    )
    audience: Literal["internal", "public"] = Field(
        default="internal",
        description="public: its versions also go to the residents of its area, once approved",
    )
    drill: bool = Field(default=False, description="an exercise: CAP status Exercise")

    def content(self) -> Content:
        return Content(
            hazard=self.hazard,
            level=Level.parse(self.level),
            areas=tuple(self.areas),
            expires=self.expires,
            polygon=self.polygon,
            headline=self.headline,
            description=self.description,
            instruction=self.instruction,
            effective=self.effective,
            event_type=self.event_type,
        )


class UpdateIn(BaseModel):
    level: ActiveLevelName | None = Field(default=None, description="default: as it stands")
    areas: list[Code] | None = Field(default=None, min_length=1, max_length=500)
    polygon: Polygon | None = None
    expires: Instant | None = Field(default=None, description="a later one continues it (继续发布)")
    headline: Headline | None = None
    description: Text | None = None
    instruction: Text | None = None

    def changes(self) -> Changes:
        return Changes(
            level=Level.parse(self.level) if self.level else None,
            areas=tuple(self.areas) if self.areas is not None else None,
            polygon=self.polygon,
            expires=self.expires,
            headline=self.headline,
            description=self.description,
            instruction=self.instruction,
        )


class CancelIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why it ends early")


class DecisionIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class RequestOut(BaseModel):
    id: int
    warning_id: str
    action: Literal["issue", "update", "cancel"]
    state: Literal["draft", "pending_approval", "done", "rejected", "withdrawn"]
    content: dict[str, Any]
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    version: int | None = Field(description="the version it made, once done")


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def _desk(request: Request) -> Desk:
    return request.app.state.desk  # type: ignore[no-any-return]


@asynccontextmanager
async def _tx(request: Request) -> AsyncIterator[Conn]:
    async with _pool(request).acquire() as conn, conn.transaction():
        yield conn
    request.app.state.delivery.wake()


async def _visible(conn: Conn, identity: Identity, warning_id: str) -> None:
    region = await conn.fetchval(
        "SELECT region_code FROM alerting.warnings WHERE id = $1", warning_id
    )
    if region is None or not identity.can_see_region(region):
        raise NotFound(f"no warning {warning_id!r}")


def router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["officer warnings"])

    @r.post("/warnings", status_code=201, response_model=RequestOut, responses=REFUSALS)
    async def draft_warning(
        body: DraftIn, identity: Annotated[Identity, needs("warnings:write")], request: Request
    ) -> Any:
        """Drafts a warning of the bureau's own (after a consultation, a patrol's finding, a
        higher level's instruction): its hazard, level, area (division codes inside your region,
        and a polygon), texts (the templates' unless given), validity, audience and drill flag.
        Nothing goes out until it is submitted."""
        async with _tx(request) as conn:
            req = await _desk(request).draft(
                conn,
                body.content(),
                public=body.audience == "public",
                drill=body.drill,
                by=identity.subject,
                region_prefix=identity.region_prefix,
                now=request.app.state.clock.now(),
            )
        return req.as_dict()

    @r.put("/warnings/{warning_id}/draft", response_model=RequestOut, responses=REFUSALS)
    async def edit_draft(
        warning_id: str,
        body: DraftIn,
        identity: Annotated[Identity, needs("warnings:write")],
        request: Request,
    ) -> Any:
        """Replaces the draft's content (its audience and drill flag stay as drafted)."""
        async with _tx(request) as conn:
            await _visible(conn, identity, warning_id)
            req = await _desk(request).edit(
                conn,
                warning_id,
                body.content(),
                by=identity.subject,
                region_prefix=identity.region_prefix,
                now=request.app.state.clock.now(),
            )
        return req.as_dict()

    @r.post("/warnings/{warning_id}/submit", response_model=RequestOut, responses=REFUSALS)
    async def submit_draft(
        warning_id: str,
        identity: Annotated[Identity, needs("warnings:write")],
        request: Request,
    ) -> Any:
        """Issues the draft: at once (the request comes back ``done`` with version 1), or, at a
        level that needs it, once an approver other than you approves (``pending_approval``)."""
        async with _tx(request) as conn:
            await _visible(conn, identity, warning_id)
            req = await _desk(request).submit(
                conn,
                warning_id,
                by=identity.subject,
                region_prefix=identity.region_prefix,
                now=request.app.state.clock.now(),
            )
        return req.as_dict()

    @r.post(
        "/warnings/{warning_id}/updates",
        status_code=201,
        response_model=RequestOut,
        responses=REFUSALS,
    )
    async def update_warning(
        warning_id: str,
        body: UpdateIn,
        identity: Annotated[Identity, needs("warnings:write")],
        request: Request,
    ) -> Any:
        """A new version of a standing warning: a level up or down, a new area, a later expiry
        (继续发布 at the same level). On a warning risk raised, you take it over: risk events no
        longer change it."""
        return await _change(request, identity, warning_id, "update", changes=body.changes())

    @r.post(
        "/warnings/{warning_id}/cancel",
        status_code=201,
        response_model=RequestOut,
        responses=REFUSALS,
    )
    async def cancel_warning(
        warning_id: str,
        body: CancelIn,
        identity: Annotated[Identity, needs("warnings:write")],
        request: Request,
    ) -> Any:
        """Ends a standing warning early, saying why (its Cancel version carries the reason).
        Ending a warning risk raised also keeps the same evidence from raising it again until
        it would have expired."""
        return await _change(request, identity, warning_id, "cancel", reason=body.reason)

    @r.get("/warnings/{warning_id}/requests", response_model=list[RequestOut])
    async def list_warning_requests(
        warning_id: str,
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
    ) -> Any:
        """Every request made of the warning, oldest first: who asked, who approved, what
        version it made."""
        async with _pool(request).acquire() as conn:
            await _visible(conn, identity, warning_id)
            return [q.as_dict() for q in await desk_store.requests_of(conn, warning_id)]

    @r.get("/warning-requests", response_model=list[RequestOut])
    async def list_pending_requests(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        """The approvals queue: requests in your region awaiting an approver, oldest first."""
        async with _pool(request).acquire() as conn:
            return [
                q.as_dict() for q in await desk_store.pending(conn, identity.region_prefix, limit)
            ]

    @r.post("/warning-requests/{rid}/approve", response_model=RequestOut, responses=REFUSALS)
    async def approve_request(
        rid: RowId,
        body: DecisionIn,
        identity: Annotated[Identity, needs("warnings:approve")],
        request: Request,
    ) -> Any:
        """Four eyes: an approver other than its author lets the request's version out (and,
        for a public warning, its broadcast to residents)."""
        return await _decide(request, identity, rid, approve=True, reason=body.reason)

    @r.post("/warning-requests/{rid}/reject", response_model=RequestOut, responses=REFUSALS)
    async def reject_request(
        rid: RowId,
        body: DecisionIn,
        identity: Annotated[Identity, needs("warnings:approve")],
        request: Request,
    ) -> Any:
        """Refuses the request; a refused issue goes back to a draft its author may edit."""
        return await _decide(request, identity, rid, approve=False, reason=body.reason)

    @r.post("/warning-requests/{rid}/withdraw", response_model=RequestOut, responses=REFUSALS)
    async def withdraw_request(
        rid: RowId,
        identity: Annotated[Identity, needs("warnings:write")],
        request: Request,
    ) -> Any:
        """Its author takes back a request still awaiting approval."""
        async with _tx(request) as conn:
            await _visible(conn, identity, (await desk_store.request(conn, rid)).warning_id)
            out = await _desk(request).withdraw(
                conn, rid, by=identity.subject, now=request.app.state.clock.now()
            )
        return out.as_dict()

    return r


async def _change(
    request: Request,
    identity: Identity,
    warning_id: str,
    action: Literal["update", "cancel"],
    *,
    changes: Changes | None = None,
    reason: str | None = None,
) -> Any:
    async with _tx(request) as conn:
        await _visible(conn, identity, warning_id)
        req = await _desk(request).change(
            conn,
            warning_id,
            action,
            changes=changes,
            reason=reason,
            by=identity.subject,
            region_prefix=identity.region_prefix,
            now=request.app.state.clock.now(),
        )
    return req.as_dict()


async def _decide(
    request: Request, identity: Identity, rid: int, *, approve: bool, reason: str | None
) -> Any:
    if "approver" not in identity.roles and "admin" not in identity.roles:
        raise PermissionDenied("only an approver decides on a request")
    async with _tx(request) as conn:
        await _visible(conn, identity, (await desk_store.request(conn, rid)).warning_id)
        out = await _desk(request).decide(
            conn,
            rid,
            approve=approve,
            by=identity.subject,
            reason=reason,
            now=request.app.state.clock.now(),
        )
    return out.as_dict()
