"""alerting's HTTP API for public warnings: publication requests and decisions, and the resident
broadcast lists."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from services.alerting.adapters.publications import decide, request_publication
from shared import sheets
from shared.errors import NotFound, PermissionDenied, ValidationFailed
from shared.http import IdentityDep, RowId, needs
from shared.identity import Identity

MAX_IMPORT_BYTES = 64 << 20


class PublicationIn(BaseModel):
    note: str | None = Field(default=None, max_length=500)


class DecisionIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class PublicationOut(BaseModel):
    id: int
    warning_id: str
    version: int
    state: str
    requested_by: str
    requested_at: datetime
    note: str | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    escalated_at: datetime | None
    recipients: int | None


class ImportOut(BaseModel):
    received: int
    stored: int = Field(description="numbers added, or re-activated")
    refused: list[str] = Field(description="the first lines refused, with the reason")


MAX_REFUSED = 200


def resident_rows(
    sheet: list[list[object]], identity: Identity
) -> tuple[list[tuple[int, str, str, bool]], list[str], int]:
    """The good rows of a residents sheet (row number, region, phone, drill), the first
    ``MAX_REFUSED`` refused ones with their reason, and how many rows had content."""
    rows: list[tuple[int, str, str, bool]] = []
    refused: list[str] = []
    received = 0
    for n, rec in enumerate(sheet):
        cells = [_cell(c) for c in rec]
        if not any(cells) or (n == 0 and not cells[0].isdigit()):
            continue
        received += 1
        region = cells[0]
        phone = cells[1] if len(cells) > 1 else ""
        drill = len(cells) > 2 and cells[2].lower() in ("1", "true", "yes", "drill", "是")
        if len(region) != 12 or not region.isdigit():
            reason = "region code is not 12 digits"
        elif not phone.lstrip("+").isdigit() or not 5 <= len(phone.lstrip("+")) <= 20:
            reason = "phone is not a number"
        elif not identity.can_see_region(region):
            reason = "region outside your scope"
        else:
            rows.append((n, region, phone, drill))
            continue
        if len(refused) < MAX_REFUSED:
            refused.append(f"line {n + 1}: {reason}")
    return rows, refused, received


def _cell(value: object) -> str:
    """A cell as text: a workbook's numbers (a phone typed as a number) without a fraction."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


async def _warning_region(pool: asyncpg.Pool, warning_id: str) -> str:
    region = await pool.fetchval(
        "SELECT region_code FROM alerting.warnings WHERE id = $1", warning_id
    )
    if region is None:
        raise NotFound(f"no warning {warning_id!r}")
    return str(region)


def router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["public warnings"])

    @r.post(
        "/warnings/{warning_id}/publication",
        status_code=201,
        response_model=PublicationOut,
        responses={409: {"description": "the warning is closed, or this version is requested"}},
    )
    async def request_public_release(
        warning_id: str,
        body: PublicationIn,
        identity: Annotated[Identity, needs("warnings:publish")],
        request: Request,
    ) -> Any:
        """Asks for the warning's current version to go to the residents of its area (and the
        public CAP feed). Levels that need approval wait for an approver."""
        pool = _pool(request)
        region = await _warning_region(pool, warning_id)
        if not identity.can_see_region(region):
            raise NotFound(f"no warning {warning_id!r}")
        async with pool.acquire() as conn, conn.transaction():
            out = await request_publication(
                conn,
                warning_id=warning_id,
                requested_by=identity.subject,
                now=request.app.state.clock.now(),
                approval_levels=request.app.state.settings.approval_levels,
                note=body.note,
            )
        request.app.state.delivery.wake()
        return out

    async def _decide(
        pid: int, approve: bool, body: DecisionIn, identity: Any, request: Request
    ) -> Any:
        if "approver" not in identity.roles and "admin" not in identity.roles:
            raise PermissionDenied("only an approver decides on a publication")
        pool = _pool(request)
        wid = await pool.fetchval("SELECT warning_id FROM alerting.publications WHERE id=$1", pid)
        if wid is None or not identity.can_see_region(await _warning_region(pool, wid)):
            raise NotFound(f"no publication {pid}")
        async with pool.acquire() as conn, conn.transaction():
            out = await decide(
                conn,
                pid,
                approve=approve,
                by=identity.subject,
                now=request.app.state.clock.now(),
                reason=body.reason,
            )
        request.app.state.delivery.wake()
        return out

    @r.post(
        "/publications/{pid}/approve",
        response_model=PublicationOut,
        responses={409: {"description": "the publication is decided already"}},
    )
    async def approve_publication(
        pid: RowId, body: DecisionIn, identity: IdentityDep, request: Request
    ) -> Any:
        """Approves (four eyes: not by the requester); the broadcast starts at once."""
        return await _decide(pid, True, body, identity, request)

    @r.post(
        "/publications/{pid}/reject",
        response_model=PublicationOut,
        responses={409: {"description": "the publication is decided already"}},
    )
    async def reject_publication(
        pid: RowId, body: DecisionIn, identity: IdentityDep, request: Request
    ) -> Any:
        return await _decide(pid, False, body, identity, request)

    @r.get("/publications", response_model=list[PublicationOut])
    async def list_publications(
        identity: Annotated[Identity, needs("warnings:read")],
        request: Request,
        state: Literal["pending_approval", "approved", "rejected", "superseded"] | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        rows = await _pool(request).fetch(
            """SELECT p.* FROM alerting.publications p
                 JOIN alerting.warnings w ON w.id = p.warning_id
                WHERE w.region_code LIKE $1 || '%' AND ($2::text IS NULL OR p.state = $2)
                ORDER BY p.requested_at DESC LIMIT $3""",
            identity.region_prefix,
            state,
            limit,
        )
        return [dict(x.items()) for x in rows]

    @r.post("/residents/import", response_model=ImportOut)
    async def import_residents(
        identity: Annotated[Identity, needs("recipients:write")], request: Request
    ) -> Any:
        """Adds residents' numbers from a sheet of rows ``region_code, phone[, drill]``: CSV
        (UTF-8 or GB 18030) or an Excel workbook (.xlsx, its first sheet; told by its media type
        or its zip signature). A header row is skipped. Numbers already listed for a village are
        kept once; the last row about a number wins. Rows outside the caller's region, or
        malformed, are refused, each with its row number and reason."""
        raw = await request.body()
        if len(raw) > MAX_IMPORT_BYTES:
            raise ValidationFailed(f"at most {MAX_IMPORT_BYTES} bytes per import")
        # a workbook is a zip archive, whatever media type a browser or proxy gave it
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fmt: sheets.Format = "xlsx" if media == sheets.XLSX or raw[:4] == b"PK\x03\x04" else "csv"
        rows, refused, received = resident_rows(sheets.read(raw, fmt), identity)
        async with _pool(request).acquire() as conn, conn.transaction():
            await conn.execute(
                """CREATE TEMP TABLE resident_import
                       (n int, region_code text, phone text, drill bool) ON COMMIT DROP"""
            )
            await conn.copy_records_to_table("resident_import", records=rows)
            status = await conn.execute(
                """INSERT INTO alerting.residents (region_code, phone, drill)
                   SELECT DISTINCT ON (region_code, phone) region_code, phone, drill
                     FROM resident_import ORDER BY region_code, phone, n DESC
                   ON CONFLICT (region_code, phone) DO UPDATE SET drill = EXCLUDED.drill,
                                                                  active = true"""
            )
        return {"received": received, "stored": int(status.split()[-1]), "refused": refused}

    @r.get("/residents/count")
    async def count_residents(
        identity: Annotated[Identity, needs("recipients:read")],
        request: Request,
        region_prefix: Annotated[str, Query(pattern=r"^\d{0,12}$")] = "",
    ) -> dict[str, int]:
        n = await _pool(request).fetchval(
            "SELECT count(*) FROM alerting.residents WHERE active AND region_code LIKE $1 || '%'",
            identity.narrow(region_prefix),
        )
        return {"residents": int(n)}

    return r
