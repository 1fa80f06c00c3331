"""叫应 confirmations: a task confirmed (by link, SMS reply or API), its ledger rows marked and the
confirmation audited, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from prometheus_client import Counter, Histogram

from services.alerting.adapters.audit import audit_many
from shared.contracts import Level
from shared.db import Conn

ConfirmVia = Literal["link", "sms", "api"]

CONFIRMED = Counter(
    "qianshao_confirmations_total", "叫应 confirmations received, by how", ["via", "level"]
)
TIME_TO_CONFIRM = Histogram(
    "qianshao_confirm_duration_seconds",
    "From a warning version needing confirmation to the person confirming it",
    ["level"],
    buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200),
)


async def confirm_tasks(
    conn: Conn, task_ids: Sequence[int], via: ConfirmVia, now: datetime, actor: str
) -> list[int]:
    """Marks open tasks confirmed; returns the ids that were open (a repeat confirms nothing)."""
    rows = await conn.fetch(
        """UPDATE alerting.confirm_tasks
              SET confirmed_at = $2, confirmed_via = $3
            WHERE id = ANY($1::bigint[]) AND confirmed_at IS NULL AND NOT closed
        RETURNING id, warning_id, version, person_id, level, created_at""",
        list(task_ids),
        now,
        via,
    )
    if not rows:
        return []
    await conn.execute(
        """UPDATE alerting.deliveries d SET state = 'confirmed'
             FROM unnest($1::text[], $2::int[], $3::text[]) AS k(wid, ver, rcpt)
            WHERE d.warning_id = k.wid AND d.version = k.ver AND d.recipient = k.rcpt
              AND d.purpose = 'warning' AND d.state IN ('sent', 'delivered')""",
        [r["warning_id"] for r in rows],
        [r["version"] for r in rows],
        [f"person:{r['person_id']}" for r in rows],
    )
    await audit_many(
        conn,
        (
            (
                actor,
                "confirm",
                r["warning_id"],
                {"version": r["version"], "person_id": r["person_id"], "via": via},
            )
            for r in rows
        ),
    )
    for r in rows:
        level = Level(r["level"]).name
        CONFIRMED.labels(via, level).inc()
        TIME_TO_CONFIRM.labels(level).observe(max(0.0, (now - r["created_at"]).total_seconds()))
    return [r["id"] for r in rows]


async def confirm_by_phone(conn: Conn, phone: str, now: datetime, actor: str) -> list[int]:
    """An SMS reply confirms every open task of the people with that number."""
    digits = phone.removeprefix("+").removeprefix("86") if len(phone) > 11 else phone
    ids = await conn.fetch(
        """SELECT t.id FROM alerting.confirm_tasks t
             JOIN alerting.persons p ON p.id = t.person_id
            WHERE p.active AND p.phone IN ($1, '+86' || $1, '86' || $1)
              AND t.confirmed_at IS NULL AND NOT t.closed""",
        digits,
    )
    return await confirm_tasks(conn, [r["id"] for r in ids], "sms", now, actor)
