"""The approval sweep: publication requests left pending past the timeout are escalated once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import asyncpg

from services.alerting.adapters.publications import audit_publication
from services.alerting.domain.messages import drill_prefix_for
from services.alerting.domain.publication import Pending, overdue
from shared.clock import Clock

log = logging.getLogger(__name__)


class ApprovalSweep:
    """Escalates publication requests pending past the timeout: one SMS to each leader of the
    warning's county and each of its duty officers on duty."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        clock: Clock,
        timeout: timedelta,
        on_new_deliveries: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._timeout = timeout
        self._wake = on_new_deliveries

    async def run_once(self) -> int:
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT p.id, p.requested_at, p.escalated_at, p.warning_id, p.version,
                          w.region_code, w.status, v.headline
                     FROM alerting.publications p
                     JOIN alerting.warnings w ON w.id = p.warning_id
                     JOIN alerting.warning_versions v
                       ON v.warning_id = p.warning_id AND v.version = p.version
                    WHERE p.state = 'pending_approval' AND p.escalated_at IS NULL
                      AND p.requested_at <= $1
                    FOR UPDATE OF p SKIP LOCKED""",
                now - self._timeout,
            )
            by_id = {r["id"]: r for r in rows}
            due = overdue(
                [Pending(r["id"], r["requested_at"], r["escalated_at"]) for r in rows],
                now,
                self._timeout,
            )
            sent = 0
            for p in due:
                r = by_id[p.id]
                county = r["region_code"][:6]
                people = await conn.fetch(
                    """SELECT p.id, p.phone FROM alerting.persons p
                        WHERE p.active AND p.phone IS NOT NULL AND p.jurisdiction = $1
                          AND (p.role = 'leader'
                               OR (p.role = 'county_duty_officer' AND EXISTS (
                                     SELECT 1 FROM alerting.duty_roster d
                                      WHERE d.person_id = p.id AND d.starts_at <= $2
                                        AND d.ends_at > $2)))""",
                    county,
                    now,
                )
                minutes = int(self._timeout.total_seconds() // 60)
                text = (
                    f"{drill_prefix_for(r['status'])}【审批超时】公众预警发布申请已等待{minutes}分钟"
                    f"未审批：{r['headline']}。请立即审批。"
                )
                await conn.executemany(
                    """INSERT INTO alerting.deliveries
                           (warning_id, version, recipient, channel, target, idempotency_key,
                            purpose, message, next_attempt_at)
                       VALUES ($1, $2, $3, 'sms', $4, $5, 'escalation', $6, $7)
                       ON CONFLICT DO NOTHING""",
                    [
                        (
                            r["warning_id"],
                            r["version"],
                            f"person:{x['id']}",
                            x["phone"],
                            f"approval:{p.id}:{x['id']}",
                            text,
                            now,
                        )
                        for x in people
                    ],
                )
                await conn.execute(
                    "UPDATE alerting.publications SET escalated_at = $2 WHERE id = $1", p.id, now
                )
                await audit_publication(
                    conn,
                    "system:approval-timeout",
                    "publication.escalate",
                    r["warning_id"],
                    p.id,
                    f"{len(people)} notified",
                )
                sent += len(people)
                if not people:
                    log.warning("no leader or duty officer to escalate to", extra={"pub": p.id})
        if sent:
            self._wake()
        return len(due)
