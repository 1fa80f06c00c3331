"""叫应 (call-and-confirm): the sweep that calls and escalates (confirming itself is
:mod:`services.alerting.adapters.confirmations`).

The decisions are pure (``due_actions`` and ``escalation_targets`` of
:mod:`services.alerting.domain.recipients`); this module loads the tasks, writes the ledger
rows the decisions call for, and marks the tasks, in one transaction per round. Tasks are locked
with ``SKIP LOCKED``, so replicas sweep side by side, and each action is recorded on its
task in the same transaction as its ledger row: a voice call or an escalation happens once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
from prometheus_client import Counter

from services.alerting.adapters.people import duty_officers
from services.alerting.domain.messages import drill_prefix_for
from services.alerting.domain.recipients import (
    ConfirmPolicy,
    ConfirmTask,
    Person,
    ancestors,
    due_actions,
    escalation_targets,
)
from shared.clock import Clock
from shared.db import Conn

log = logging.getLogger(__name__)

CONFIRM_ACTIONS = Counter(
    "qianshao_confirm_actions_total",
    "Voice calls and escalations for unconfirmed people",
    ["action"],
)


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
        return [p for p in await duty_officers(conn, wanted, now) if p.on_duty]


def policy_from(voice_after_s: float, escalate_after_s: float) -> ConfirmPolicy:
    return ConfirmPolicy(timedelta(seconds=voice_after_s), timedelta(seconds=escalate_after_s))
