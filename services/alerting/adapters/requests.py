"""Officers' warnings and their requests (``alerting.warning_requests``), officers' control of a
warning, and the holds an officer's cancel leaves (``alerting.officer_holds``).

Every function takes the transaction's connection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.alerting.domain.officer import Action, Content
from services.alerting.domain.states import WarningState
from shared.contracts import Level
from shared.db import Conn, columns
from shared.errors import Conflict, NotFound

REQUEST_COLUMNS = """id, warning_id, action, state, content, requested_by, requested_at,
    decided_by, decided_at, reason, version"""


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    warning_id: str
    action: Action
    state: str
    content: dict[str, Any]
    requested_by: str
    requested_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "warning_id": self.warning_id,
            "action": self.action,
            "state": self.state,
            "content": self.content,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "reason": self.reason,
            "version": self.version,
        }


def _request(r: Any) -> Request:
    content = r["content"]
    return Request(
        id=r["id"],
        warning_id=r["warning_id"],
        action=r["action"],
        state=r["state"],
        content=dict(content),
        requested_by=r["requested_by"],
        requested_at=r["requested_at"],
        decided_by=r["decided_by"],
        decided_at=r["decided_at"],
        reason=r["reason"],
        version=r["version"],
    )


async def create_draft(
    conn: Conn,
    *,
    warning_id: str,
    content: Content,
    region_code: str,
    kind: str,
    status: str,
    by: str,
    now: datetime,
) -> Request:
    """A new officer's warning, as a draft: the warning row (no version yet) and its issue
    request, in state ``draft`` until it is submitted."""
    await conn.execute(
        """INSERT INTO alerting.warnings
               (id, hazard, region_code, level, state, identifier, version, status, kind, origin,
                event_type, areas, created_by, controlled_by, controlled_at, created_at,
                updated_at)
           VALUES ($1, $2, $3, $4, $5, '', 0, $6, $7, 'officer', $8, $9, $10, $10, $11, $11,
                   $11)""",
        warning_id,
        content.hazard,
        region_code,
        int(content.level),
        WarningState.draft,
        status,
        kind,
        content.event_type,
        list(content.areas),
        by,
        now,
    )
    return await insert_request(conn, warning_id, "issue", content.to_json(), by, now, "draft")


async def insert_request(
    conn: Conn,
    warning_id: str,
    action: Action,
    content: dict[str, Any],
    by: str,
    now: datetime,
    state: str = "pending_approval",
) -> Request:
    r = await conn.fetchrow(
        f"""INSERT INTO alerting.warning_requests
                (warning_id, action, state, content, requested_by, requested_at)
            VALUES ($1, $2, $3, $4::jsonb, $5, $6)
            ON CONFLICT DO NOTHING
            RETURNING {REQUEST_COLUMNS}""",  # noqa: S608 - a constant column list
        warning_id,
        action,
        state,
        content,
        by,
        now,
    )
    if r is None:
        raise Conflict(
            f"warning {warning_id} has a request awaiting approval: approve, reject or withdraw "
            "it first"
        )
    return _request(r)


async def request(conn: Conn, rid: int, *, lock: bool = False) -> Request:
    r = await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM alerting.warning_requests WHERE id = $1"  # noqa: S608
        + (" FOR UPDATE" if lock else ""),
        rid,
    )
    if r is None:
        raise NotFound(f"no request {rid}")
    return _request(r)


async def draft_of(conn: Conn, warning_id: str) -> Request | None:
    """The warning's draft (its issue request not yet submitted), locked."""
    r = await conn.fetchrow(
        f"""SELECT {REQUEST_COLUMNS} FROM alerting.warning_requests
             WHERE warning_id = $1 AND state = 'draft' FOR UPDATE""",  # noqa: S608 - constant
        warning_id,
    )
    return _request(r) if r is not None else None


async def requests_of(conn: Conn, warning_id: str) -> list[Request]:
    rows = await conn.fetch(
        f"""SELECT {REQUEST_COLUMNS} FROM alerting.warning_requests
             WHERE warning_id = $1 ORDER BY id""",  # noqa: S608 - a constant column list
        warning_id,
    )
    return [_request(r) for r in rows]


async def pending(conn: Conn, region_prefix: str, limit: int) -> list[Request]:
    """Requests awaiting an approver, on warnings in the region, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {", ".join("q." + c.strip() for c in REQUEST_COLUMNS.split(","))}
              FROM alerting.warning_requests q JOIN alerting.warnings w ON w.id = q.warning_id
             WHERE q.state = 'pending_approval' AND w.region_code LIKE $1 || '%'
             ORDER BY q.requested_at LIMIT $2""",  # noqa: S608 - a constant column list
        region_prefix,
        limit,
    )
    return [_request(r) for r in rows]


async def set_draft(conn: Conn, rid: int, content: Content, region_code: str) -> None:
    """A draft edited: its request's content and the warning's fields that follow it."""
    wid = await conn.fetchval(
        """UPDATE alerting.warning_requests SET content = $2::jsonb WHERE id = $1
           RETURNING warning_id""",
        rid,
        content.to_json(),
    )
    await conn.execute(
        """UPDATE alerting.warnings SET hazard = $2, level = $3, region_code = $4, areas = $5,
                  event_type = $6, updated_at = now()
            WHERE id = $1""",
        wid,
        content.hazard,
        int(content.level),
        region_code,
        list(content.areas),
        content.event_type,
    )


async def set_request_state(
    conn: Conn,
    rid: int,
    state: str,
    *,
    by: str | None = None,
    at: datetime | None = None,
    reason: str | None = None,
    version: int | None = None,
) -> None:
    await conn.execute(
        """UPDATE alerting.warning_requests
              SET state = $2, decided_by = coalesce($3, decided_by),
                  decided_at = coalesce($4, decided_at), reason = coalesce($5, reason),
                  version = coalesce($6, version)
            WHERE id = $1""",
        rid,
        state,
        by,
        at,
        reason,
        version,
    )


async def set_warning_state(conn: Conn, warning_id: str, state: WarningState) -> None:
    await conn.execute(
        "UPDATE alerting.warnings SET state = $2, updated_at = now() WHERE id = $1",
        warning_id,
        state,
    )


async def prepare_issue(conn: Conn, warning_id: str, identifier: str, region_code: str) -> None:
    """A draft about to become its first version: its identifier and group region."""
    await conn.execute(
        """UPDATE alerting.warnings SET identifier = $2, region_code = $3, updated_at = now()
            WHERE id = $1""",
        warning_id,
        identifier,
        region_code,
    )


async def set_area(conn: Conn, warning_id: str, areas: list[str]) -> None:
    await conn.execute("UPDATE alerting.warnings SET areas = $2 WHERE id = $1", warning_id, areas)


async def take_control(conn: Conn, warning_id: str, by: str, now: datetime) -> None:
    """An officer decides the warning from now on (the automatic path stops issuing versions)."""
    await conn.execute(
        """UPDATE alerting.warnings SET controlled_by = $2, controlled_at = $3
            WHERE id = $1 AND controlled_by IS DISTINCT FROM $2""",
        warning_id,
        by,
        now,
    )


async def hold_group(
    conn: Conn,
    *,
    hazard: str,
    region_code: str,
    level: Level,
    until: datetime,
    warning_id: str,
    by: str,
) -> None:
    await conn.execute(
        """INSERT INTO alerting.officer_holds
               (hazard, region_code, level, until, warning_id, author)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (hazard, region_code) DO UPDATE
              SET level = EXCLUDED.level, until = EXCLUDED.until,
                  warning_id = EXCLUDED.warning_id, author = EXCLUDED.author""",
        hazard,
        region_code,
        int(level),
        until,
        warning_id,
        by,
    )


async def group_holds(
    conn: Conn, groups: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Level, datetime]]:
    """The officer holds (level, until) on (hazard, region) groups: what an officer cancelled
    is not raised again at or below its level until then (groups without a hold absent)."""
    if not groups:
        return {}
    rows = await conn.fetch(
        """SELECT hazard, region_code, level, until FROM alerting.officer_holds
            WHERE (hazard, region_code) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
        *columns(groups, 2),
    )
    return {(r["hazard"], r["region_code"]): (Level(r["level"]), r["until"]) for r in rows}
