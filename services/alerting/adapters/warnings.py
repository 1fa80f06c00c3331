"""Warnings, their versions and the station levels behind them (``alerting.warnings``,
``warning_versions``, ``warning_stations``), as the pipeline stages read and write them.

Every function takes the transaction's connection; the group lock (:func:`lock_group`) is what
serialises the work on one group across the consumer, the sweeps and the replicas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.alerting.domain.grouping import OpenWarning
from services.alerting.domain.silences import Silence
from services.alerting.domain.states import (
    OPEN,
    STANDING,
    TOLD,
    WAITING,
    Dispatch,
    MsgType,
    WarningState,
)
from shared.contracts import Level, RiskEvent
from shared.db import Conn


@dataclass(frozen=True, slots=True)
class WarningRow:
    """A warning as a new version of it needs it."""

    id: str
    hazard: str
    region_code: str
    level: Level
    version: int
    identifier: str
    status: str  # CAP status: Actual, Exercise
    kind: str  # internal, public
    last_dispatch_at: datetime | None
    origin: str = "sensor"  # sensor, officer
    controlled_by: str | None = None  # the officer who decides it (none: risk events do)
    areas: tuple[str, ...] = ()  # its divisions; empty: its region alone
    event_type: str | None = None  # GB/T 35965.1

    @property
    def area_codes(self) -> tuple[str, ...]:
        """The divisions it covers."""
        return self.areas or (self.region_code,)


_COLUMNS = (
    "id, hazard, region_code, level, version, identifier, status, kind, last_dispatch_at, "
    "origin, controlled_by, areas, event_type"
)


def _warning(r: Any) -> WarningRow:
    return WarningRow(
        id=r["id"],
        hazard=r["hazard"],
        region_code=r["region_code"],
        level=Level(r["level"]),
        version=r["version"],
        identifier=r["identifier"],
        status=r["status"],
        kind=r["kind"],
        last_dispatch_at=r["last_dispatch_at"],
        origin=r["origin"],
        controlled_by=r["controlled_by"],
        areas=tuple(r["areas"]),
        event_type=r["event_type"],
    )


def group_key(hazard: str, region_code: str) -> str:
    return f"{hazard}:{region_code}"


async def lock_groups(conn: Conn, groups: Iterable[tuple[str, str]]) -> None:
    """Take the (hazard, region) groups' locks until the transaction ends, in one order for
    everyone (so two holders of several never wait on each other in a circle)."""
    keys = sorted({group_key(h, r) for h, r in groups})
    if len(keys) == 1:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", keys[0])
    elif keys:
        await conn.execute(
            """SELECT pg_advisory_xact_lock(h)
                 FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k
                        ORDER BY 1) AS locks""",
            keys,
        )


async def first_seen(conn: Conn, event_id: str) -> bool:
    """Record a risk event as applied; False when it was applied before (a re-delivery)."""
    fresh: bool | None = await conn.fetchval(
        """INSERT INTO alerting.processed_events (event_id) VALUES ($1)
           ON CONFLICT DO NOTHING RETURNING true""",
        event_id,
    )
    return bool(fresh)


async def open_warning(conn: Conn, hazard: str, region_code: str) -> WarningRow | None:
    """The group's standing warning, locked for this transaction (an officer's draft or a
    request awaiting approval holds no place in the group)."""
    r = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM alerting.warnings
             WHERE hazard = $1 AND region_code = $2 AND state = ANY($3::text[])
               FOR UPDATE""",  # noqa: S608 - a constant column list
        hazard,
        region_code,
        list(STANDING),
    )
    return _warning(r) if r is not None else None


async def warning(conn: Conn, warning_id: str) -> WarningRow:
    r = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM alerting.warnings WHERE id = $1",  # noqa: S608 - constant
        warning_id,
    )
    assert r is not None, warning_id
    return _warning(r)


async def rule_levels(conn: Conn, warning_id: str) -> dict[tuple[str, str], Level]:
    """The levels that stand in a warning, by (station, rule)."""
    rows = await conn.fetch(
        "SELECT station_id, rule_id, level FROM alerting.warning_stations WHERE warning_id = $1",
        warning_id,
    )
    return {(r["station_id"], r["rule_id"]): Level(r["level"]) for r in rows}


async def set_station(conn: Conn, warning_id: str, ev: RiskEvent) -> None:
    """The event's (station, rule) level in the warning, and when risk last stated it."""
    await conn.execute(
        """INSERT INTO alerting.warning_stations
               (warning_id, station_id, rule_id, level, event_id, seen_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (warning_id, station_id, rule_id)
           DO UPDATE SET level = EXCLUDED.level, event_id = EXCLUDED.event_id,
                         updated_at = now(),
                         seen_at = greatest(warning_stations.seen_at, EXCLUDED.seen_at)""",
        warning_id,
        ev.station_id,
        ev.rule_id,
        int(Level.parse(ev.level)),
        ev.event_id,
        ev.produced_at,
    )


async def drop_station(conn: Conn, warning_id: str, station_id: str, rule_id: str) -> None:
    await conn.execute(
        """DELETE FROM alerting.warning_stations
            WHERE warning_id = $1 AND station_id = $2 AND rule_id = $3""",
        warning_id,
        station_id,
        rule_id,
    )


async def confirm_standing(
    conn: Conn, events: Sequence[RiskEvent]
) -> set[tuple[str | None, str, str]]:
    """Mark the (station, rule) rows that standing announcements confirm (same level, in an open
    warning of the hazard) as seen; the (station, rule, hazard) of those confirmed."""
    rows = await conn.fetch(
        """UPDATE alerting.warning_stations ws
              SET seen_at = greatest(ws.seen_at, x.at)
             FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[],
                         $5::timestamptz[]) AS x(s, r, hz, l, at),
                  alerting.warnings w
            WHERE ws.station_id = x.s AND ws.rule_id = x.r AND ws.level = x.l
              AND w.id = ws.warning_id AND w.hazard = x.hz AND w.state = ANY($6::text[])
        RETURNING ws.station_id, ws.rule_id, w.hazard""",
        [e.station_id for e in events],
        [e.rule_id for e in events],
        [e.hazard for e in events],
        [int(Level.parse(e.level)) for e in events],
        [e.produced_at for e in events],
        list(OPEN),
    )
    return {(r["station_id"], r["rule_id"], r["hazard"]) for r in rows}


async def in_maintenance(conn: Conn, station_id: str, at: datetime) -> bool:
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM alerting.maintenance WHERE station_id = $1
                             AND starts_at <= $2 AND ends_at > $2)""",
        station_id,
        at,
    )
    return found


async def withdraw_held_cancel(conn: Conn, hazard: str, region_code: str) -> tuple[str, int] | None:
    """The group's latest warning, if its all-clear is still waiting for its group timer, back
    as it was before the all-clear (which is deleted: it never went out). Its (id, the version
    withdrawn), or None."""
    w = await conn.fetchrow(
        """SELECT w.id, w.version FROM alerting.warnings w
             JOIN alerting.warning_versions v ON v.warning_id = w.id AND v.version = w.version
            WHERE w.hazard = $1 AND w.region_code = $2 AND w.state = $3
              AND v.msg_type = $4 AND v.dispatch = $5
            ORDER BY w.closed_at DESC LIMIT 1
            FOR UPDATE OF w""",
        hazard,
        region_code,
        WarningState.cancelled,
        MsgType.Cancel,
        Dispatch.scheduled,
    )
    if w is None:
        return None
    prev = await conn.fetchrow(
        """SELECT version, level, msg_type FROM alerting.warning_versions
            WHERE warning_id = $1 AND version = $2""",
        w["id"],
        w["version"] - 1,
    )
    assert prev is not None
    await conn.execute(
        "DELETE FROM alerting.warning_versions WHERE warning_id = $1 AND version = $2",
        w["id"],
        w["version"],
    )
    await conn.execute(
        """UPDATE alerting.warnings SET state = $2, level = $3, version = $4, closed_at = NULL
            WHERE id = $1""",
        w["id"],
        MsgType(prev["msg_type"]).state,
        prev["level"],
        prev["version"],
    )
    return w["id"], w["version"]


async def new_warning(
    conn: Conn,
    warning_id: str,
    hazard: str,
    region_code: str,
    level: Level,
    identifier: str,
    status: str,
    event_type: str | None = None,
) -> WarningRow:
    await conn.execute(
        """INSERT INTO alerting.warnings
               (id, hazard, region_code, level, state, identifier, version, status, event_type)
           VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)""",
        warning_id,
        hazard,
        region_code,
        int(level),
        WarningState.issued,
        identifier,
        status,
        event_type,
    )
    return await warning(conn, warning_id)


async def next_serial(conn: Conn) -> int:
    serial: int = await conn.fetchval("SELECT nextval('alerting.warning_serial')")
    return serial


async def earlier_versions(conn: Conn, warning_id: str) -> list[tuple[str, datetime]]:
    """(identifier, sent) of each version so far, oldest first: a new version's references."""
    rows = await conn.fetch(
        """SELECT identifier, sent FROM alerting.warning_versions
            WHERE warning_id = $1 ORDER BY version""",
        warning_id,
    )
    return [(r["identifier"], r["sent"]) for r in rows]


async def set_latest(
    conn: Conn,
    warning_id: str,
    *,
    level: Level,
    version: int,
    msg_type: MsgType,
    expires: datetime | None,
) -> None:
    """The warning as its new latest version leaves it."""
    await conn.execute(
        """UPDATE alerting.warnings SET level=$2, version=$3, state=$4, updated_at=now(),
               closed_at = CASE WHEN $4 = 'cancelled' THEN now() END, expires_at = $5
            WHERE id=$1""",
        warning_id,
        int(level),
        version,
        msg_type.state,
        expires,
    )


async def insert_version(
    conn: Conn,
    row: Sequence[Any],
    *,
    area_desc: str | None = None,
    instruction: str | None = None,
    effective: datetime | None = None,
    areas: Sequence[str] = (),
    polygon: str | None = None,
) -> None:
    """(warning id, version, msg type, level, identifier, sent, headline, description, refs,
    station ids, cause event, cause time, expires); ``area_desc``: the region in words; the
    rest as an officer wrote them (none for a warning risk raised)."""
    await conn.execute(
        """INSERT INTO alerting.warning_versions
               (warning_id, version, msg_type, level, identifier, sent, headline, description,
                refs, station_ids, cause_event, cause_time, expires, area_desc, instruction,
                effective, areas, polygon)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   $18)""",
        *row,
        area_desc,
        instruction,
        effective,
        list(areas),
        polygon,
    )


async def recent_versions(conn: Conn, hazard: str, region_code: str, since: datetime) -> int:
    """Versions of the group's warnings sent after ``since`` (flapping is judged on them)."""
    n: int = await conn.fetchval(
        """SELECT count(*) FROM alerting.warning_versions v
             JOIN alerting.warnings w ON w.id = v.warning_id
            WHERE w.hazard = $1 AND w.region_code = $2 AND v.sent > $3""",
        hazard,
        region_code,
        since,
    )
    return n


async def set_dispatch(
    conn: Conn,
    warning_id: str,
    version: int,
    state: Dispatch,
    *,
    at: datetime | None = None,
    silence_id: int | None = None,
    inhibitor_id: str | None = None,
) -> None:
    """A version's dispatch state; ``at`` for ``scheduled``, the holder for ``silenced`` and
    ``inhibited``."""
    if state == Dispatch.scheduled:
        await conn.execute(
            """UPDATE alerting.warning_versions SET dispatch = $3, dispatch_at = $4
                WHERE warning_id = $1 AND version = $2""",
            warning_id,
            version,
            state,
            at,
        )
    elif state in (Dispatch.silenced, Dispatch.inhibited):
        await conn.execute(
            """UPDATE alerting.warning_versions
                  SET dispatch = $3, silenced_by = $4, inhibited_by = $5
                WHERE warning_id = $1 AND version = $2""",
            warning_id,
            version,
            state,
            silence_id,
            inhibitor_id,
        )
    else:
        await conn.execute(
            """UPDATE alerting.warning_versions SET dispatch = $3
                WHERE warning_id = $1 AND version = $2""",
            warning_id,
            version,
            state,
        )


async def dispatch_of(conn: Conn, warning_id: str, version: int) -> Dispatch:
    state: str = await conn.fetchval(
        "SELECT dispatch FROM alerting.warning_versions WHERE warning_id = $1 AND version = $2",
        warning_id,
        version,
    )
    return Dispatch(state)


async def supersede_earlier(conn: Conn, warning_id: str, version: int) -> bool:
    """Versions before ``version`` that have not gone out never will; whether any earlier one
    did (its recipients were told of the warning)."""
    await conn.execute(
        """UPDATE alerting.warning_versions SET dispatch = $3
            WHERE warning_id = $1 AND version < $2 AND dispatch = ANY($4::text[])""",
        warning_id,
        version,
        Dispatch.superseded,
        list(WAITING),
    )
    told: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM alerting.warning_versions
                           WHERE warning_id = $1 AND version < $2
                             AND dispatch = ANY($3::text[]))""",
        warning_id,
        version,
        list(TOLD),
    )
    return told


async def dispatched(conn: Conn, warning_id: str, at: datetime) -> None:
    """People heard of the warning at ``at`` (group and repeat timers count from it)."""
    await conn.execute(
        "UPDATE alerting.warnings SET last_dispatch_at = $2 WHERE id = $1", warning_id, at
    )


async def still(
    conn: Conn, warning_id: str, version: int, states: Sequence[Dispatch]
) -> Dispatch | None:
    """The version's dispatch state, if it is still its warning's latest and in ``states``."""
    state: str | None = await conn.fetchval(
        """SELECT v.dispatch FROM alerting.warning_versions v
             JOIN alerting.warnings w ON w.id = v.warning_id AND w.version = v.version
            WHERE v.warning_id = $1 AND v.version = $2 AND v.dispatch = ANY($3::text[])""",
        warning_id,
        version,
        list(states),
    )
    return Dispatch(state) if state is not None else None


async def standing_in_region(conn: Conn, region_code: str, hazard: str) -> list[OpenWarning]:
    """The standing warnings of other hazards on the same region (inhibition's sources)."""
    rows = await conn.fetch(
        """SELECT id, hazard, region_code, level FROM alerting.warnings
            WHERE region_code = $1 AND hazard <> $2 AND state = ANY($3::text[])""",
        region_code,
        hazard,
        list(STANDING),
    )
    return [OpenWarning(r["id"], r["hazard"], r["region_code"], Level(r["level"])) for r in rows]


async def active_silences(conn: Conn, now: datetime) -> list[Silence]:
    rows = await conn.fetch(
        """SELECT id, starts_at, ends_at, station_id, region_prefix, hazard
             FROM alerting.silences WHERE starts_at <= $1 AND ends_at > $1""",
        now,
    )
    return [Silence(**dict(r.items())) for r in rows]
