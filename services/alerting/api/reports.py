"""alerting's HTTP API for the record: the audit log, and drill reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from shared.api_types import Instant
from shared.errors import Conflict, NotFound
from shared.http import needs
from shared.identity import Identity


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    warning_id: str | None
    detail: dict[str, Any]


class DrillRecipient(BaseModel):
    recipient: str
    name: str | None
    region_code: str | None
    channel: str
    version: int
    state: str
    sent_at: datetime | None
    delivered_at: datetime | None
    must_confirm: bool
    confirmed_at: datetime | None
    confirmed_via: str | None


class DrillReport(BaseModel):
    warning_id: str
    identifier: str
    versions: int
    recipients: int
    delivered: int
    failed: int
    must_confirm: int
    confirmed: int
    median_confirm_seconds: float | None
    rows: list[DrillRecipient]


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["record"])

    @r.get("/audit", response_model=list[AuditOut])
    async def list_audit(
        identity: Annotated[Identity, needs("audit:read")],
        request: Request,
        warning_id: str | None = None,
        actor: str | None = None,
        action: Annotated[str | None, Query(description="exact, or a prefix ending in '.'")] = None,
        since: Instant | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> Any:
        """Every state change with its actor and reason, newest first. Entries about a warning
        are shown within the caller's region; entries about no warning to callers whose scope
        is every region."""
        rows = await _pool(request).fetch(
            """SELECT a.id, a.at, a.actor, a.action, a.warning_id, a.detail
                 FROM alerting.audit_log a
                 LEFT JOIN alerting.warnings w ON w.id = a.warning_id
                WHERE (w.region_code LIKE $1 || '%' OR (a.warning_id IS NULL AND $1 = '')
                       OR (a.warning_id IS NOT NULL AND w.id IS NULL AND $1 = ''))
                  AND ($2::text IS NULL OR a.warning_id = $2)
                  AND ($3::text IS NULL OR a.actor = $3)
                  AND ($4::text IS NULL OR a.action = $4
                       OR (right($4, 1) = '.' AND a.action LIKE $4 || '%'))
                  AND ($5::timestamptz IS NULL OR a.at >= $5)
                ORDER BY a.id DESC LIMIT $6""",
            identity.region_prefix,
            warning_id,
            actor,
            action,
            since,
            limit,
        )
        return [dict(x.items()) for x in rows]

    @r.get(
        "/warnings/{warning_id}/drill-report",
        response_model=DrillReport,
        responses={409: {"description": "the warning is not a drill"}},
    )
    async def get_drill_report(
        warning_id: str, identity: Annotated[Identity, needs("warnings:read")], request: Request
    ) -> Any:
        """Who received a drill, on which channel and when, who had to confirm, who did and
        when."""
        pool = _pool(request)
        w = await pool.fetchrow(
            "SELECT id, identifier, region_code, status, version FROM alerting.warnings "
            "WHERE id = $1",
            warning_id,
        )
        if w is None or not identity.can_see_region(w["region_code"]):
            raise NotFound(f"no warning {warning_id!r}")
        if w["status"] != "Exercise":
            raise Conflict("a drill report is for drills; this warning is not one")
        rows = await pool.fetch(
            """SELECT d.recipient, coalesce(p.name, NULL) AS name,
                      coalesce(p.region_code, r.region_code) AS region_code, d.channel,
                      d.version, d.state, d.sent_at, d.delivered_at,
                      t.id IS NOT NULL AS must_confirm, t.confirmed_at, t.confirmed_via
                 FROM alerting.deliveries d
                 LEFT JOIN alerting.persons p
                   ON d.recipient = 'person:' || p.id
                 LEFT JOIN alerting.residents r
                   ON d.recipient = 'resident:' || r.id
                 LEFT JOIN alerting.confirm_tasks t
                   ON t.warning_id = d.warning_id AND t.version = d.version
                  AND d.recipient = 'person:' || t.person_id
                WHERE d.warning_id = $1 AND d.channel <> 'kafka'
                ORDER BY d.version, d.recipient, d.channel""",
            warning_id,
        )
        items = [dict(x.items()) for x in rows]
        confirm_s = sorted(
            (x["confirmed_at"] - x["sent_at"]).total_seconds()
            for x in items
            if x["confirmed_at"] is not None and x["sent_at"] is not None
        )
        return {
            "warning_id": w["id"],
            "identifier": w["identifier"],
            "versions": w["version"],
            "recipients": len({x["recipient"] for x in items}),
            "delivered": sum(x["state"] in ("sent", "delivered", "confirmed") for x in items),
            "failed": sum(x["state"] == "failed" for x in items),
            "must_confirm": len({x["recipient"] for x in items if x["must_confirm"]}),
            "confirmed": len({x["recipient"] for x in items if x["confirmed_at"] is not None}),
            "median_confirm_seconds": confirm_s[len(confirm_s) // 2] if confirm_s else None,
            "rows": items,
        }

    return r
