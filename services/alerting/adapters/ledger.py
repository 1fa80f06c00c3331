"""The delivery ledger (``alerting.deliveries``): one row per (version, recipient, channel) and
purpose, written in the transaction that decides it, and claimed by the delivery worker under a
lease. A row's idempotency key makes a repeated write harmless (``ON CONFLICT DO NOTHING``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

from services.alerting.domain.states import COUNTED, Delivery, Purpose
from shared.db import Conn, columns

Recipient = tuple[str, str, str]  # (recipient, channel, target): "person:7", "sms", "+86…"


async def insert(
    conn: Conn,
    warning_id: str,
    version: int,
    rows: Sequence[Recipient],
    *,
    now: datetime,
    purpose: Purpose = Purpose.warning,
    message: str | None = None,
    key_part: str = "",
    state: Delivery = Delivery.pending,
) -> None:
    """Rows of a version for ``rows``; ``key_part`` tells apart the rows of one version and
    recipient that are not the version itself (a reminder, a digest)."""
    await conn.execute(
        """INSERT INTO alerting.deliveries
               (warning_id, version, recipient, channel, target, idempotency_key,
                next_attempt_at, purpose, message, state, created_at)
           SELECT $1::text, $2::int, u.recipient, u.channel, u.target,
                  $2::int || ':' || $1::text || ':' || $7 || u.recipient || ':' || u.channel,
                  $6, $8, $9, $10, $6
             FROM unnest($3::text[], $4::text[], $5::text[]) AS u(recipient, channel, target)
           ON CONFLICT DO NOTHING""",
        warning_id,
        version,
        *columns(rows, 3),
        now,
        key_part,
        purpose,
        message,
        state,
    )


async def insert_keyed(
    conn: Conn,
    warning_id: str,
    version: int,
    rows: Sequence[tuple[Recipient, str]],
    *,
    now: datetime,
    purpose: Purpose,
    message: str,
    priority: int = 0,
) -> None:
    """Rows with idempotency keys of their own (a relay's, an expiry notice's); ``priority``:
    lower goes first (0 people and endpoints, above that broadcasts, below it the fast path)."""
    await conn.execute(
        """INSERT INTO alerting.deliveries
               (warning_id, version, recipient, channel, target, idempotency_key,
                purpose, message, next_attempt_at, priority)
           SELECT $1::text, $2::int, u.recipient, u.channel, u.target, u.key, $7, $8, $9, $10
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[])
                  AS u(recipient, channel, target, key)
           ON CONFLICT DO NOTHING""",
        warning_id,
        version,
        [r[0][0] for r in rows],
        [r[0][1] for r in rows],
        [r[0][2] for r in rows],
        [r[1] for r in rows],
        purpose,
        message,
        now,
        priority,
    )


async def recent_counts(
    conn: Conn, recipients: Sequence[str], since: datetime
) -> dict[tuple[str, str], int]:
    """Messages each recipient had on each channel since ``since`` that count against storm
    mode's limit (held ones not yet)."""
    rows = await conn.fetch(
        """SELECT recipient, channel, count(*) AS n FROM alerting.deliveries
            WHERE recipient = ANY($1::text[]) AND created_at > $2
              AND purpose = ANY($3::text[]) AND state <> $4
            GROUP BY 1, 2""",
        sorted(set(recipients)),
        since,
        list(COUNTED),
        Delivery.held,
    )
    return {(r["recipient"], r["channel"]): r["n"] for r in rows}


@dataclass(frozen=True)
class Lane:
    """The channels one set of delivery loops claims: a slow or failing provider holds up its
    own lane only. ``exclude``: the lane for every channel no other lane names."""

    name: str
    channels: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None


def lanes_for(groups: Sequence[Sequence[str]]) -> list[Lane]:
    """A lane per group of channels, and one for the rest (channels in no group, and anything
    unknown, which then fails with a reason rather than waiting for ever)."""
    named = tuple(ch for g in groups for ch in g)
    return [
        *(Lane("+".join(g), channels=tuple(g)) for g in groups if g),
        Lane("rest", exclude=named),
    ]


# the two tables a worker claims from: single rows, and a broadcast's batches
Claimable = Literal["deliveries", "delivery_batches"]
_CLAIM = {
    "deliveries": """d.id, d.warning_id, d.version, d.recipient, d.channel, d.target,
                     d.idempotency_key, d.attempts, d.message, d.purpose, due.old_keys, due.was""",
    "delivery_batches": "d.id, d.channel, d.attempts, d.attempt_keys, due.old_keys, due.was",
}


async def claim(
    db: asyncpg.Pool | Conn,
    table: Claimable,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    claim_id: str,
    lane: Lane | None = None,
) -> list[asyncpg.Record]:
    """Claim what is due (pending, or sending with a lease run out) under a new lease, in one
    statement (``FOR UPDATE SKIP LOCKED``: replicas never claim the same row). Every provider
    request of the round is named after ``claim_id``, and the rows carry it before any request
    goes out; ``was`` and ``old_keys`` tell a row whose lease ran out (its worker died
    mid-send, or the provider left it unknown) from a fresh one. ``lane``: only rows of its
    channels (or, for the rest, of channels in no other lane)."""
    only, other = (lane.channels, lane.exclude) if lane is not None else (None, None)
    return await db.fetch(
        f"""WITH due AS (SELECT id, state AS was, attempt_keys AS old_keys
                           FROM alerting.{table}
                          WHERE state IN ('pending', 'sending') AND next_attempt_at <= $1
                            AND ($5::text[] IS NULL OR channel = ANY($5::text[]))
                            AND ($6::text[] IS NULL OR channel <> ALL($6::text[]))
                          ORDER BY priority, next_attempt_at, id
                          LIMIT $3 FOR UPDATE SKIP LOCKED)
            UPDATE alerting.{table} d
               SET state = 'sending', attempts = d.attempts + 1, next_attempt_at = $2,
                   attempt_keys = CASE WHEN due.was = 'sending'
                                       THEN d.attempt_keys || $4::text
                                       ELSE ARRAY[$4::text] END
              FROM due WHERE d.id = due.id
         RETURNING {_CLAIM[table]}""",  # noqa: S608 - the table is one of two constants
        now,
        now + lease,
        limit,
        claim_id,
        None if only is None else list(only),
        None if other is None else list(other),
    )


async def renew_lease(
    db: asyncpg.Pool | Conn, table: Claimable, ids: list[int], until: datetime, claim_id: str
) -> None:
    """Push the lease out on what this claim still holds."""
    await db.execute(
        f"""UPDATE alerting.{table} SET next_attempt_at = $2
             WHERE id = ANY($1::bigint[]) AND state = 'sending'
               AND attempt_keys[cardinality(attempt_keys)] = $3""",  # noqa: S608 - a constant
        ids,
        until,
        claim_id,
    )


async def close_confirm_tasks(conn: Conn, warning_id: str, before_version: int | None) -> None:
    """Close the open 叫应 tasks of a warning's versions before ``before_version`` (all of them
    with None): what is to be confirmed now is the new version, or nothing."""
    await conn.execute(
        """UPDATE alerting.confirm_tasks SET closed = true
            WHERE warning_id = $1 AND ($2::int IS NULL OR version < $2)
              AND confirmed_at IS NULL AND NOT closed""",
        warning_id,
        before_version,
    )


async def insert_many(
    conn: Conn,
    rows: Sequence[tuple[str, int, str, str, str]],
    *,
    now: datetime,
    state: Delivery = Delivery.pending,
) -> None:
    """:func:`insert` of the versions themselves for several (warning id, version, recipient,
    channel, target) in one statement."""
    if not rows:
        return
    await conn.execute(
        """INSERT INTO alerting.deliveries
               (warning_id, version, recipient, channel, target, idempotency_key,
                next_attempt_at, purpose, message, state, created_at)
           SELECT u.w, u.n, u.recipient, u.channel, u.target,
                  u.n || ':' || u.w || ':' || u.recipient || ':' || u.channel,
                  $6, $7, NULL, $8, $6
             FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[])
                  AS u(w, n, recipient, channel, target)
           ON CONFLICT DO NOTHING""",
        *columns(rows, 5),
        now,
        Purpose.warning,
        state,
    )


async def close_confirm_tasks_many(conn: Conn, rows: Sequence[tuple[str, int]]) -> None:
    """:func:`close_confirm_tasks` for several (warning id, version)."""
    if rows:
        await conn.execute(
            """UPDATE alerting.confirm_tasks t SET closed = true
                 FROM unnest($1::text[], $2::int[]) AS x(w, n)
                WHERE t.warning_id = x.w AND t.version < x.n
                  AND t.confirmed_at IS NULL AND NOT t.closed""",
            *columns(rows, 2),
        )


async def open_confirm_tasks_many(
    conn: Conn, rows: Sequence[tuple[str, int, int, int, str]], now: datetime
) -> None:
    """叫应 tasks for who must confirm each version: (warning id, version, level, person id,
    region)."""
    if rows:
        await conn.execute(
            """INSERT INTO alerting.confirm_tasks
                   (warning_id, version, person_id, region_code, level, created_at)
               SELECT u.w, u.n, u.pid, u.region, u.level, $6
                 FROM unnest($1::text[], $2::int[], $3::smallint[], $4::bigint[], $5::text[])
                      AS u(w, n, level, pid, region)
               ON CONFLICT DO NOTHING""",
            *columns(rows, 5),
            now,
        )
