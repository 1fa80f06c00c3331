"""Others' warnings (the weather service's, the city's), relayed to the people in scope and the
endpoints subscribed, marked as the sender's: never re-issued as our own (no warning, no CAP of
ours, not on ``alerts.v1``). Test, system and draft messages are not relayed; a drill goes to
drill recipients only. A re-delivered message finds its identifier and does nothing. An
earthquake early warning takes the pre-authorised fast path: ahead of every other row, and to
the residents of its area as well, with no approval to wait for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg
from prometheus_client import Counter

from services.alerting.adapters import ledger
from services.alerting.adapters.audit import audit
from services.alerting.adapters.people import load_persons, subscribed
from services.alerting.adapters.publications import broadcast_part
from services.alerting.domain.recipients import fan_out
from services.alerting.domain.relay import FAST_PRIORITY, RelayPlan, relay_plan
from services.alerting.domain.states import Purpose
from shared.contracts import Level, UpstreamWarning
from shared.db import Conn

RELAYED = Counter("qianshao_upstream_relayed_total", "Upstream warnings relayed to recipients")


def relayable(u: UpstreamWarning) -> bool:
    if u.status not in ("Actual", "Exercise") or not u.region_codes:
        return False
    return u.level != "none" or u.msg_type == "Cancel"


async def relay(conn: Conn, warnings: Sequence[UpstreamWarning], now: datetime) -> int:
    """The ledger rows written for ``warnings``, in the caller's transaction."""
    total = 0
    for u in warnings:
        if not relayable(u):
            continue
        plan = relay_plan(u)
        if not await _record(conn, u, plan, now):
            continue
        rows: dict[tuple[str, str], str] = {}
        for region in u.region_codes:
            code = region.ljust(12, "0")
            for rcpt, channel, target in await subscribed(
                conn, code, max(Level.blue, plan.level), plan.hazard
            ):
                rows[(rcpt, channel)] = target
            out = fan_out(
                await load_persons(conn, code, now),
                hazard=plan.hazard,
                level=max(plan.level, Level.blue),
                region_code=code,
                msg_type=u.msg_type,
                drill=u.status == "Exercise",
            )
            for send in out.sends:
                rows[(f"person:{send.person.id}", send.channel)] = send.target
        wid = f"relay:{u.identifier}"
        await ledger.insert_keyed(
            conn,
            wid,
            1,
            [((r, ch, target), f"{wid}:{r}:{ch}") for (r, ch), target in rows.items()],
            now=now,
            purpose=Purpose.relay,
            message=plan.text,
            priority=FAST_PRIORITY if plan.fast else 0,
        )
        await conn.execute(
            "UPDATE alerting.relayed SET recipients = $2 WHERE identifier = $1",
            u.identifier,
            len(rows),
        )
        await audit(
            conn,
            "system:upstream",
            "relay",
            {
                "identifier": u.identifier,
                "sender": u.sender,
                "recipients": len(rows),
                # the pre-authorised fast path: ahead of every other message, no wait, and the
                # residents of its area with no approval (:func:`relay_to_residents`)
                **({"fast_path": plan.hazard} if plan.fast else {}),
            },
        )
        RELAYED.inc()
        total += len(rows)
    return total


async def _record(conn: Conn, u: UpstreamWarning, plan: RelayPlan, now: datetime) -> bool:
    """Note the message as relayed; False when it was before."""
    fresh: bool | None = await conn.fetchval(
        """INSERT INTO alerting.relayed (identifier, sender, sent, msg_type, status,
               event, hazard, level, region_code, region_codes, headline, refs, relayed_at,
               residents_pending, text)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           ON CONFLICT DO NOTHING RETURNING true""",
        u.identifier,
        u.sender,
        u.sent,
        u.msg_type,
        u.status,
        u.event,
        plan.hazard,
        int(plan.level),
        plan.region_code,
        u.region_codes,
        plan.headline,
        u.references,
        now,
        plan.fast,
        plan.text,
    )
    return bool(fresh)


# residents written in the first part of a fast-path broadcast (ten provider requests: the first
# residents' SMS leave within a few tens of milliseconds), then in larger parts
FIRST_PART, PART = 2_000, 20_000


async def relay_to_residents(
    pool: asyncpg.Pool,
    identifiers: Sequence[str],
    now: datetime,
    on_part: Callable[[], None],
) -> int:
    """The residents of the area of each fast-path message among ``identifiers`` whose broadcast
    is not finished, written part by part, each part in its own transaction and handed to the
    delivery worker (``on_part``) as it commits; a re-delivered message whose broadcast a crash
    cut short is finished (rows already written are skipped). The rows written."""
    pending = await pool.fetch(
        """SELECT identifier, status, region_codes, text
             FROM alerting.relayed WHERE identifier = ANY($1::text[]) AND residents_pending""",
        list(identifiers),
    )
    total = 0
    for m in pending:
        wid = f"relay:{m['identifier']}"
        after: int | None = 0
        limit = FIRST_PART
        while after is not None:
            async with pool.acquire() as conn, conn.transaction():
                n, after = await broadcast_part(
                    conn,
                    warning_id=wid,
                    version=1,
                    areas=[r.ljust(12, "0") for r in m["region_codes"]],
                    drill=m["status"] == "Exercise",
                    now=now,
                    priority=FAST_PRIORITY,
                    message=m["text"],
                    after_id=after,
                    limit=limit,
                )
                if after is None:
                    await conn.execute(
                        """UPDATE alerting.relayed SET residents_pending = false,
                                  recipients = recipients + (
                                      SELECT count(*) FROM alerting.deliveries
                                       WHERE warning_id = $2 AND recipient LIKE 'resident:%')
                            WHERE identifier = $1""",
                        m["identifier"],
                        wid,
                    )
                    await audit(
                        conn,
                        "system:upstream",
                        "relay.residents",
                        {"identifier": m["identifier"], "fast_path": True},
                    )
            total += n
            if n:
                on_part()
            limit = PART
    return total
