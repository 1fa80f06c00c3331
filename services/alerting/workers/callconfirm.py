"""叫应 (call-and-confirm) at the database edge: confirming, and the sweep that calls and escalates.

The decisions are pure (``due_actions`` and ``escalation_targets`` of
:mod:`services.alerting.domain.recipients`); this module loads the tasks, writes the ledger
rows the decisions call for, and marks the tasks, in one transaction per round. Tasks are locked
with ``SKIP LOCKED``, so replicas sweep side by side, and each action is recorded on its
task in the same transaction as its ledger row: a voice call or an escalation happens once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal

import asyncpg
from prometheus_client import Counter, Histogram

from services.alerting.domain.messages import drill_prefix_for
from services.alerting.domain.recipients import (
    ConfirmPolicy,
    ConfirmTask,
    Person,
    ancestors,
    due_actions,
    escalation_targets,
)
from services.alerting.workers.consumer import PERSON_COLUMNS, person_from_row
from shared.clock import Clock
from shared.contracts import Level
from shared.db import Conn

log = logging.getLogger(__name__)

ConfirmVia = Literal["link", "sms", "api"]

CONFIRMED = Counter(
    "qianshao_confirmations_total", "叫应 confirmations received, by how", ["via", "level"]
)
TIME_TO_CONFIRM = Histogram(
    "qianshao_confirm_seconds",
    "From a warning version needing confirmation to the person confirming it",
    ["level"],
    buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200),
)
CONFIRM_ACTIONS = Counter(
    "qianshao_confirm_actions_total",
    "Voice calls and escalations for unconfirmed people",
    ["action"],
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
    await conn.executemany(
        """INSERT INTO alerting.audit_log (actor, action, warning_id, detail)
           VALUES ($1, 'confirm', $2, $3)""",
        [
            (
                actor,
                r["warning_id"],
                {"version": r["version"], "person_id": r["person_id"], "via": via},
            )
            for r in rows
        ],
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


class ConfirmSweep:
    """Finds unconfirmed tasks past T1 (voice call) or T2 (escalation) and acts on them."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        clock: Clock,
        policy: ConfirmPolicy,
        on_new_deliveries: Callable[[], None],
        batch: int = 500,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._policy = policy
        self._wake = on_new_deliveries
        self._batch = batch

    async def run_once(self) -> int:
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT t.id, t.person_id, t.warning_id, t.version, t.created_at,
                          t.voice_at, t.escalated_at, t.region_code,
                          p.jurisdiction, p.phone, p.name,
                          v.headline, w.status
                     FROM alerting.confirm_tasks t
                     JOIN alerting.persons p ON p.id = t.person_id
                     JOIN alerting.warning_versions v
                       ON v.warning_id = t.warning_id AND v.version = t.version
                     JOIN alerting.warnings w ON w.id = t.warning_id
                    WHERE t.confirmed_at IS NULL AND NOT t.closed
                      AND ((t.voice_at IS NULL AND t.created_at <= $1)
                           OR (t.escalated_at IS NULL AND t.created_at <= $2))
                    ORDER BY t.id LIMIT $3
                      FOR UPDATE OF t SKIP LOCKED""",
                now - self._policy.voice_after,
                now - self._policy.escalate_after,
                self._batch,
            )
            by_id = {r["id"]: r for r in rows}
            tasks = [
                ConfirmTask(
                    id=r["id"],
                    person_id=r["person_id"],
                    jurisdiction=r["jurisdiction"],
                    created_at=r["created_at"],
                    voice_at=r["voice_at"],
                    escalated_at=r["escalated_at"],
                )
                for r in rows
            ]
            actions = due_actions(tasks, now, self._policy)
            if not actions:
                return 0
            officers = await self._on_duty(conn, {t.jurisdiction for t, _ in actions}, now)
            deliveries: list[tuple[str, int, str, str, str, str, str, str | None]] = []
            notices: dict[tuple[Person, str, int], list[asyncpg.Record]] = {}
            for task, action in actions:
                r = by_id[task.id]
                if action == "voice":
                    await conn.execute(
                        "UPDATE alerting.confirm_tasks SET voice_at = $2 WHERE id = $1",
                        task.id,
                        now,
                    )
                    if r["phone"]:
                        deliveries.append(
                            (
                                r["warning_id"],
                                r["version"],
                                f"person:{task.person_id}",
                                "voice",
                                r["phone"],
                                f"voice:{task.id}",
                                "voice",
                                None,
                            )
                        )
                    continue
                targets = escalation_targets(task.jurisdiction, officers)
                await conn.execute(
                    """UPDATE alerting.confirm_tasks SET escalated_at = $2, escalated_to = $3
                        WHERE id = $1""",
                    task.id,
                    now,
                    [p.id for p in targets],
                )
                for p in targets:
                    if p.phone:
                        notices.setdefault((p, r["warning_id"], r["version"]), []).append(r)
                if not targets:
                    log.warning(
                        "no duty officer on duty above an unconfirmed person",
                        extra={"task_id": task.id, "jurisdiction": task.jurisdiction},
                    )
            # one notice per officer and warning version, naming everyone unconfirmed
            for (officer, wid, version), missing in notices.items():
                first = missing[0]
                names = "、".join(f"{m['name']}（{m['region_code']}）" for m in missing)
                deliveries.append(
                    (
                        wid,
                        version,
                        f"person:{officer.id}",
                        "sms",
                        officer.phone or "",
                        "escalate:" + ",".join(str(m["id"]) for m in missing) + f":{officer.id}",
                        "escalation",
                        f"{drill_prefix_for(first['status'])}【叫应升级】{names}"
                        f"未确认收到预警：{first['headline']}。请立即督促落实。",
                    )
                )
            if deliveries:
                await conn.executemany(
                    """INSERT INTO alerting.deliveries
                           (warning_id, version, recipient, channel, target, idempotency_key,
                            purpose, message, next_attempt_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                       ON CONFLICT DO NOTHING""",
                    [(*d, now) for d in deliveries],
                )
            for _, action in actions:
                CONFIRM_ACTIONS.labels(action).inc()
        if deliveries:
            self._wake()
        return len(actions)

    async def _on_duty(self, conn: Conn, prefixes: set[str], now: datetime) -> list[Person]:
        wanted = sorted({a for p in prefixes for a in ancestors(p)})
        rows = await conn.fetch(
            f"""SELECT {PERSON_COLUMNS} FROM alerting.persons p
                 WHERE p.active AND p.jurisdiction = ANY($2::text[])
                   AND p.role IN ('township_duty_officer', 'county_duty_officer')""",  # noqa: S608
            now,
            wanted,
        )
        return [p for p in map(person_from_row, rows) if p.on_duty]


def policy_from(voice_after_s: float, escalate_after_s: float) -> ConfirmPolicy:
    return ConfirmPolicy(timedelta(seconds=voice_after_s), timedelta(seconds=escalate_after_s))
