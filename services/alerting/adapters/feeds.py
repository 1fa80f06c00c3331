"""Feed incidents in the database (``alerting.feed_incidents``, ``feed_members``,
``feed_stations``), and the two things alerting reads for them from elsewhere: an enterprise's
name and safety officer from the 一张图 (``atlas.enterprises``, a published read model that
exists only where PostGIS does)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.alerting.domain.feeds import Incident, Signal
from shared.db import Conn


@dataclass(frozen=True, slots=True)
class Enterprise:
    name: str
    officer_name: str | None
    officer_phone: str | None


async def lock_subjects(conn: Conn, subjects: Sequence[str]) -> None:
    """Each subject's lock, to the end of the transaction, in one order (no deadlock between
    the consumer and the sweep)."""
    for s in sorted(set(subjects)):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('feed:' || $1))", s)


async def learn_owner(conn: Conn, s: Signal) -> None:
    await conn.execute(
        """INSERT INTO alerting.feed_stations (station_id, enterprise, region_code)
           VALUES ($1, $2, $3)
           ON CONFLICT (station_id) DO UPDATE
           SET enterprise = EXCLUDED.enterprise, region_code = EXCLUDED.region_code
           WHERE (feed_stations.enterprise, feed_stations.region_code)
                 IS DISTINCT FROM (EXCLUDED.enterprise, EXCLUDED.region_code)""",
        s.station_id,
        s.enterprise,
        s.region_code,
    )


async def owners(conn: Conn, station_ids: Sequence[str]) -> dict[str, str | None]:
    rows = await conn.fetch(
        "SELECT station_id, enterprise FROM alerting.feed_stations WHERE station_id = ANY($1)",
        sorted(set(station_ids)),
    )
    return {r["station_id"]: r["enterprise"] for r in rows}


_INCIDENT = """i.id, i.subject, i.enterprise, i.region_code, i.title, i.opened_at,
    i.notified_at, i.notified_level, i.escalated_at,
    coalesce((SELECT array_agg(m.station_id || ' ' || m.source) FROM alerting.feed_members m
               WHERE m.incident_id = i.id AND m.offline), '{}') AS offline"""


def _incident(r: Any) -> Incident:
    return Incident(
        id=r["id"],
        subject=r["subject"],
        enterprise=r["enterprise"],
        region_code=r["region_code"],
        title=r["title"],
        opened_at=r["opened_at"],
        notified_at=r["notified_at"],
        notified_level=r["notified_level"],
        escalated_at=r["escalated_at"],
        offline=frozenset(tuple(m.rsplit(" ", 1)) for m in r["offline"]),
    )


async def open_incident(conn: Conn, subject: str) -> Incident | None:
    r = await conn.fetchrow(
        f"""SELECT {_INCIDENT} FROM alerting.feed_incidents i
             WHERE i.subject = $1 AND i.closed_at IS NULL""",  # noqa: S608 - constant columns
        subject,
    )
    return _incident(r) if r is not None else None


async def incident(conn: Conn, incident_id: int) -> Incident | None:
    r = await conn.fetchrow(
        f"SELECT {_INCIDENT} FROM alerting.feed_incidents i WHERE i.id = $1",  # noqa: S608
        incident_id,
    )
    return _incident(r) if r is not None else None


async def create(conn: Conn, subject: str, s: Signal, title: str) -> int:
    iid: int = await conn.fetchval(
        """INSERT INTO alerting.feed_incidents (subject, enterprise, region_code, title, opened_at)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        subject,
        s.enterprise,
        s.region_code,
        title,
        s.at,
    )
    return iid


async def set_member(conn: Conn, incident_id: int, s: Signal) -> None:
    await conn.execute(
        """INSERT INTO alerting.feed_members
               (incident_id, station_id, source, offline, since, last_seen)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (incident_id, station_id, source) DO UPDATE
           SET offline = EXCLUDED.offline, since = EXCLUDED.since,
               last_seen = coalesce(EXCLUDED.last_seen, feed_members.last_seen)""",
        incident_id,
        s.station_id,
        s.source,
        s.offline,
        s.at,
        s.last_seen,
    )


async def close(conn: Conn, incident_id: int, at: datetime) -> None:
    await conn.execute(
        "UPDATE alerting.feed_incidents SET closed_at = $2 WHERE id = $1", incident_id, at
    )


async def mark_notified(conn: Conn, incident_id: int, at: datetime, level: str) -> None:
    await conn.execute(
        """UPDATE alerting.feed_incidents SET notified_at = $2, notified_level = $3, held_by = NULL
            WHERE id = $1""",
        incident_id,
        at,
        level,
    )


async def mark_held(conn: Conn, incident_id: int, why: str) -> bool:
    """Record why the notice waits; True when that is news (the audit log says it once)."""
    changed: bool | None = await conn.fetchval(
        """UPDATE alerting.feed_incidents SET held_by = $2
            WHERE id = $1 AND held_by IS DISTINCT FROM $2 RETURNING true""",
        incident_id,
        why,
    )
    return bool(changed)


async def mark_escalated(conn: Conn, incident_id: int, at: datetime) -> None:
    await conn.execute(
        "UPDATE alerting.feed_incidents SET escalated_at = $2 WHERE id = $1", incident_id, at
    )


async def due(conn: Conn, escalate_before: datetime, limit: int) -> list[int]:
    """Open incidents whose offline notice still waits, or whose escalation is due."""
    rows = await conn.fetch(
        """SELECT id FROM alerting.feed_incidents
            WHERE closed_at IS NULL
              AND (notified_at IS NULL OR (escalated_at IS NULL AND opened_at <= $1))
            ORDER BY id LIMIT $2""",
        escalate_before,
        limit,
    )
    return [r["id"] for r in rows]


async def enterprise(conn: Conn, credit_code: str) -> Enterprise | None:
    """The enterprise's name and safety officer from the 一张图, None when it is not registered
    there (or the 一张图 is not installed)."""
    if not await conn.fetchval("SELECT to_regclass('atlas.enterprises') IS NOT NULL"):
        return None
    r = await conn.fetchrow(
        """SELECT name, safety_officer_name, safety_officer_phone
             FROM atlas.enterprises WHERE id = $1""",
        credit_code,
    )
    if r is None:
        return None
    return Enterprise(r["name"], r["safety_officer_name"], r["safety_officer_phone"])


async def person_with_phone(conn: Conn, phone: str) -> int | None:
    """A registered person with this number (the safety officer then counts as them, for storm
    mode and in their message history)."""
    pid: int | None = await conn.fetchval(
        "SELECT id FROM alerting.persons WHERE active AND phone = $1 ORDER BY id LIMIT 1", phone
    )
    return pid


async def told(conn: Conn, incident_id: int) -> list[tuple[str, str, str]]:
    """Everyone the incident's offline notice or escalation went to (or waits for), as ledger
    recipients."""
    rows = await conn.fetch(
        """SELECT DISTINCT recipient, channel, target FROM alerting.deliveries
            WHERE warning_id = $1 AND version = ANY($2::int[]) AND purpose = 'feed'
            ORDER BY 1, 2""",
        f"feed:{incident_id}",
        [1, 2],
    )
    return [(r["recipient"], r["channel"], r["target"]) for r in rows]


async def all_in_maintenance(conn: Conn, station_ids: Sequence[str], at: datetime) -> bool:
    if not station_ids:
        return False
    n: int = await conn.fetchval(
        """SELECT count(DISTINCT station_id) FROM alerting.maintenance
            WHERE station_id = ANY($1::text[]) AND starts_at <= $2 AND ends_at > $2""",
        list(station_ids),
        at,
    )
    return n == len(set(station_ids))
