"""Public warnings: publication requests, approval, and the broadcast to residents.

An internal alarm goes to the responsible persons at once. Making a warning public (resident
SMS, the public CAP feed) is a separate step: someone requests it, and for the levels configured
(by default all of them) an approver other than the requester approves it. Each later version of
a public warning (an update, the all-clear) is requested again automatically and needs the same
approval. A request left pending past the timeout is escalated once to the county's leaders and
its duty officer on duty.

The broadcast is one set-based insert into the ledger, at a lower priority than people and
endpoints, so a million numbers never hold up the next warning to a village cadre. Its rows are
queued in batches of one provider request each, which the delivery worker claims whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from prometheus_client import Counter

from services.alerting.adapters.audit import audit
from services.alerting.domain.publication import needs_approval
from services.alerting.domain.recipients import jurisdiction
from shared.contracts import Level
from shared.db import Conn
from shared.errors import Conflict, NotFound, PermissionDenied

log = logging.getLogger(__name__)

RESIDENT_PRIORITY = 1
# numbers in one queued batch of a broadcast: one request to Tencent's SendSms, two to Aliyun's
BROADCAST_BATCH = 200
PUBLICATIONS = Counter(
    "qianshao_publications_total", "Publication requests and decisions", ["state"]
)


async def request_publication(
    conn: Conn,
    *,
    warning_id: str,
    requested_by: str,
    now: datetime,
    approval_levels: Iterable[str],
    note: str | None = None,
) -> dict[str, object]:
    """Requests the warning's current version be made public; approves it at once when its
    level needs no approval. Older pending requests of the warning are superseded."""
    w = await conn.fetchrow(
        """SELECT id, version, level, state, region_code, status FROM alerting.warnings
            WHERE id = $1 FOR UPDATE""",
        warning_id,
    )
    if w is None:
        raise NotFound(f"no warning {warning_id!r}")
    if w["state"] not in ("issued", "updated", "cancelled"):
        raise Conflict(f"a {w['state']} warning cannot be published")
    await supersede_pending(conn, warning_id, before_version=w["version"])
    pid = await conn.fetchval(
        """INSERT INTO alerting.publications
               (warning_id, version, state, requested_by, requested_at, note)
           VALUES ($1, $2, 'pending_approval', $3, $4, $5)
           ON CONFLICT (warning_id, version) DO NOTHING RETURNING id""",
        warning_id,
        w["version"],
        requested_by,
        now,
        note,
    )
    if pid is None:
        raise Conflict(f"version {w['version']} of {warning_id} is already requested")
    await audit_publication(conn, requested_by, "publication.request", warning_id, pid, note)
    PUBLICATIONS.labels("pending_approval").inc()
    if not needs_approval(Level(w["level"]), approval_levels):
        await _approve(conn, pid, "system:no-approval-needed", now)
    return await publication(conn, pid)


async def decide(
    conn: Conn, pid: int, *, approve: bool, by: str, now: datetime, reason: str | None
) -> dict[str, object]:
    p = await conn.fetchrow(
        "SELECT state, requested_by FROM alerting.publications WHERE id = $1 FOR UPDATE", pid
    )
    if p is None:
        raise NotFound(f"no publication {pid}")
    if p["state"] != "pending_approval":
        raise Conflict(f"publication {pid} is {p['state']}")
    if p["requested_by"] == by:
        raise PermissionDenied("a request is approved or rejected by someone other than its author")
    if approve:
        await _approve(conn, pid, by, now)
    else:
        await conn.execute(
            """UPDATE alerting.publications
                  SET state = 'rejected', decided_by = $2, decided_at = $3, reason = $4
                WHERE id = $1""",
            pid,
            by,
            now,
            reason,
        )
        wid = await conn.fetchval("SELECT warning_id FROM alerting.publications WHERE id=$1", pid)
        await audit_publication(conn, by, "publication.reject", wid, pid, reason)
        PUBLICATIONS.labels("rejected").inc()
    return await publication(conn, pid)


async def _approve(conn: Conn, pid: int, by: str, now: datetime) -> None:
    p = await conn.fetchrow(
        """UPDATE alerting.publications SET state = 'approved', decided_by = $2, decided_at = $3
            WHERE id = $1 RETURNING warning_id, version""",
        pid,
        by,
        now,
    )
    assert p is not None
    w = await conn.fetchrow(
        """UPDATE alerting.warnings SET kind = 'public', updated_at = $2 WHERE id = $1
        RETURNING region_code, areas, status""",
        p["warning_id"],
        now,
    )
    assert w is not None
    n = await broadcast(
        conn,
        warning_id=p["warning_id"],
        version=p["version"],
        areas=list(w["areas"]) or [w["region_code"]],
        drill=w["status"] == "Exercise",
        now=now,
    )
    await conn.execute("UPDATE alerting.publications SET recipients = $2 WHERE id = $1", pid, n)
    await audit_publication(conn, by, "publication.approve", p["warning_id"], pid, f"{n} residents")
    PUBLICATIONS.labels("approved").inc()


async def broadcast(
    conn: Conn,
    *,
    warning_id: str,
    version: int,
    areas: Sequence[str],
    drill: bool,
    now: datetime,
    priority: int = RESIDENT_PRIORITY,
    message: str | None = None,
) -> int:
    """One ledger row per resident of the warning's divisions (drill residents only for a drill),
    queued in batches of :data:`BROADCAST_BATCH` numbers that the delivery worker claims whole
    (migration 0007). Residents who already have the version's row are left out. ``priority``:
    behind people and endpoints by default; ``message``: a text of its own (a relayed warning's)
    instead of the version's. The rows written."""
    written, _ = await broadcast_part(
        conn,
        warning_id=warning_id,
        version=version,
        areas=areas,
        drill=drill,
        now=now,
        priority=priority,
        message=message,
    )
    return written


async def broadcast_part(
    conn: Conn,
    *,
    warning_id: str,
    version: int,
    areas: Sequence[str],
    drill: bool,
    now: datetime,
    priority: int = RESIDENT_PRIORITY,
    message: str | None = None,
    after_id: int = 0,
    limit: int | None = None,
) -> tuple[int, int | None]:
    """:func:`broadcast` for the next ``limit`` residents by id after ``after_id`` (all of them
    when ``limit`` is None), so that a large broadcast can commit, and start going out, part by
    part. (rows written, the last resident id looked at — None when none was left)."""
    row = await conn.fetchrow(
        """WITH pick AS (
               SELECT r.id, r.phone
                 FROM unnest($3::text[]) AS a(prefix)
                 JOIN alerting.residents r ON r.region_code LIKE a.prefix || '%'
                WHERE r.active AND (r.drill OR NOT $5) AND r.id > $9
                ORDER BY r.id LIMIT $10
           ), res AS (
               SELECT p.id, p.phone, (row_number() OVER (ORDER BY p.id) - 1) / $7 AS k
                 FROM pick p
                WHERE NOT EXISTS (
                      SELECT 1 FROM alerting.deliveries d
                       WHERE d.warning_id = $1 AND d.version = $2 AND d.purpose = 'warning'
                         AND d.channel = 'sms' AND d.recipient = 'resident:' || p.id)
           ), batches AS (
               INSERT INTO alerting.delivery_batches
                      (warning_id, version, channel, next_attempt_at, priority, seq, size)
               SELECT $1, $2, 'sms', $4, $6, k, count(*) FROM res GROUP BY k
               RETURNING id, seq
           ), written AS (
               INSERT INTO alerting.deliveries
                   (warning_id, version, recipient, channel, target, idempotency_key,
                    next_attempt_at, priority, state, batch_id, message)
               SELECT $1, $2, 'resident:' || res.id, 'sms', res.phone,
                      $2::int || ':' || $1::text || ':resident:' || res.id || ':sms', $4, $6,
                      'queued', b.id, $8
                 FROM res JOIN batches b ON b.seq = res.k
               ON CONFLICT DO NOTHING
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM written) AS n, (SELECT max(id) FROM pick) AS last""",
        warning_id,
        version,
        [jurisdiction(code) for code in areas],
        now,
        drill,
        priority,
        BROADCAST_BATCH,
        message,
        after_id,
        limit,
    )
    assert row is not None
    return int(row["n"]), row["last"]


async def publication(conn: Conn, pid: int) -> dict[str, object]:
    row = await conn.fetchrow(
        """SELECT id, warning_id, version, state, requested_by, requested_at, note, decided_by,
                  decided_at, reason, escalated_at, recipients
             FROM alerting.publications WHERE id = $1""",
        pid,
    )
    assert row is not None
    return dict(row.items())


async def audit_publication(
    conn: Conn, actor: str, action: str, warning_id: str, pid: int, note: str | None
) -> None:
    await audit(conn, actor, action, {"publication_id": pid, "note": note}, warning_id=warning_id)


async def supersede_pending(
    conn: Conn,
    warning_id: str,
    *,
    before_version: int | None = None,
    now: datetime | None = None,
    by: str | None = None,
    reason: str | None = None,
) -> None:
    """Requests still waiting for an approver that no longer stand: those of earlier versions
    (``before_version``), or all of the warning's (its time ran out)."""
    await conn.execute(
        """UPDATE alerting.publications
              SET state = 'superseded', decided_at = coalesce($3, decided_at),
                  decided_by = coalesce($4, decided_by), reason = coalesce($5, reason)
            WHERE warning_id = $1 AND ($2::int IS NULL OR version < $2)
              AND state = 'pending_approval'""",
        warning_id,
        before_version,
        now,
        by,
        reason,
    )
