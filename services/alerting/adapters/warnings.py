"""Warnings and their versions (``alerting.warnings``, ``warning_versions``), as the pipeline
stages read and write them; the station levels behind them are in
:mod:`services.alerting.adapters.stations`.

Every function takes the transaction's connection; the group lock (:func:`lock_groups`) is what
serialises the work on one group across the consumer, the sweeps and the replicas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.alerting.domain.grouping import OpenWarning
from services.alerting.domain.silences import Silence
from services.alerting.domain.states import (
    STANDING,
    TOLD,
    WAITING,
    Dispatch,
    MsgType,
    WarningState,
)
from shared.contracts import Level
from shared.db import Conn, columns


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


async def next_serial(conn: Conn) -> int:
    serial: int = await conn.fetchval("SELECT nextval('alerting.warning_serial')")
    return serial


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


# --- the same, for a set of groups at once (the consumer's waves: one item per group) ---

Group = tuple[str, str]  # (hazard, region code)


async def first_seen_many(conn: Conn, event_ids: Sequence[str]) -> set[str]:
    """Record risk events as applied; the ids not applied before."""
    rows = await conn.fetch(
        """INSERT INTO alerting.processed_events (event_id)
           SELECT DISTINCT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING event_id""",
        list(event_ids),
    )
    return {r["event_id"] for r in rows}


async def open_warnings(conn: Conn, groups: Sequence[Group]) -> dict[Group, WarningRow]:
    """The groups' standing warnings, locked for this transaction."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM alerting.warnings
             WHERE (hazard, region_code) IN (SELECT * FROM unnest($1::text[], $2::text[]))
               AND state = ANY($3::text[])
               FOR UPDATE""",  # noqa: S608 - a constant column list
        *columns(groups, 2),
        list(STANDING),
    )
    return {(r["hazard"], r["region_code"]): _warning(r) for r in rows}


async def held_cancels(conn: Conn, groups: Sequence[Group]) -> dict[Group, tuple[str, int]]:
    """Of each group, its latest warning whose all-clear still waits for its group timer,
    locked: (id, version of the all-clear)."""
    rows = await conn.fetch(
        """SELECT w.id, w.version, w.hazard, w.region_code FROM alerting.warnings w
             JOIN alerting.warning_versions v ON v.warning_id = w.id AND v.version = w.version
            WHERE (w.hazard, w.region_code) IN (SELECT * FROM unnest($1::text[], $2::text[]))
              AND w.state = $3 AND v.msg_type = $4 AND v.dispatch = $5
            ORDER BY w.closed_at
            FOR UPDATE OF w""",
        *columns(groups, 2),
        WarningState.cancelled,
        MsgType.Cancel,
        Dispatch.scheduled,
    )
    return {(r["hazard"], r["region_code"]): (r["id"], r["version"]) for r in rows}


async def withdraw_cancel(conn: Conn, warning_id: str, version: int) -> None:
    """The all-clear ``version`` (held, never out) deleted; the warning back as it was."""
    prev = await conn.fetchrow(
        """SELECT version, level, msg_type FROM alerting.warning_versions
            WHERE warning_id = $1 AND version = $2""",
        warning_id,
        version - 1,
    )
    assert prev is not None
    await conn.execute(
        "DELETE FROM alerting.warning_versions WHERE warning_id = $1 AND version = $2",
        warning_id,
        version,
    )
    await conn.execute(
        """UPDATE alerting.warnings SET state = $2, level = $3, version = $4, closed_at = NULL
            WHERE id = $1""",
        warning_id,
        MsgType(prev["msg_type"]).state,
        prev["level"],
        prev["version"],
    )


async def next_serials(conn: Conn, n: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT nextval('alerting.warning_serial') AS s FROM generate_series(1, $1)", n
    )
    return [r["s"] for r in rows]


async def new_warnings(
    conn: Conn,
    rows: Sequence[tuple[str, str, str, Level, str, str, str | None]],
) -> dict[str, WarningRow]:
    """New warnings (each at version 1, issued) of (id, hazard, region, level, identifier,
    status, event type); the warnings by id."""
    if not rows:
        return {}
    got = await conn.fetch(
        f"""INSERT INTO alerting.warnings
               (id, hazard, region_code, level, state, identifier, version, status, event_type)
           SELECT x.id, x.hz, x.region, x.level, $8, x.ident, 1, x.status, x.et
             FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[],
                         $6::text[], $7::text[]) AS x(id, hz, region, level, ident, status, et)
        RETURNING {_COLUMNS}""",  # noqa: S608 - a constant column list
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [int(r[3]) for r in rows],
        [r[4] for r in rows],
        [r[5] for r in rows],
        [r[6] for r in rows],
        WarningState.issued,
    )
    return {r["id"]: _warning(r) for r in got}


async def earlier_versions_of(
    conn: Conn, warning_ids: Sequence[str]
) -> dict[str, list[tuple[str, datetime]]]:
    """(identifier, sent) of each version so far of each warning, oldest first: a new
    version's references."""
    out: dict[str, list[tuple[str, datetime]]] = {w: [] for w in warning_ids}
    if warning_ids:
        for r in await conn.fetch(
            """SELECT warning_id, identifier, sent FROM alerting.warning_versions
                WHERE warning_id = ANY($1::text[]) ORDER BY warning_id, version""",
            list(warning_ids),
        ):
            out[r["warning_id"]].append((r["identifier"], r["sent"]))
    return out


async def set_latest_many(
    conn: Conn, rows: Sequence[tuple[str, Level, int, MsgType, datetime | None]]
) -> None:
    """:func:`set_latest` for several (warning id, level, version, msg type, expires)."""
    if rows:
        await conn.execute(
            """UPDATE alerting.warnings w
                  SET level = x.level, version = x.version, state = x.state, updated_at = now(),
                      closed_at = CASE WHEN x.state = 'cancelled' THEN now() END,
                      expires_at = x.expires
                 FROM unnest($1::text[], $2::smallint[], $3::int[], $4::text[],
                             $5::timestamptz[]) AS x(id, level, version, state, expires)
                WHERE w.id = x.id""",
            [r[0] for r in rows],
            [int(r[1]) for r in rows],
            [r[2] for r in rows],
            [r[3].state for r in rows],
            [r[4] for r in rows],
        )


async def insert_versions(conn: Conn, rows: Sequence[Sequence[Any]]) -> None:
    """:func:`insert_version` for several rows, each with its five officer's fields after the
    thirteen (area desc, instruction, effective, areas, polygon)."""
    if rows:
        await conn.executemany(
            """INSERT INTO alerting.warning_versions
                   (warning_id, version, msg_type, level, identifier, sent, headline,
                    description, refs, station_ids, cause_event, cause_time, expires, area_desc,
                    instruction, effective, areas, polygon)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                       $17, $18)""",
            rows,
        )


async def recent_versions_many(
    conn: Conn, groups: Sequence[Group], since: datetime
) -> dict[Group, int]:
    """:func:`recent_versions` for several groups (0 for a group without any)."""
    rows = await conn.fetch(
        """SELECT w.hazard, w.region_code, count(*) AS n FROM alerting.warning_versions v
             JOIN alerting.warnings w ON w.id = v.warning_id
            WHERE (w.hazard, w.region_code) IN (SELECT * FROM unnest($1::text[], $2::text[]))
              AND v.sent > $3
            GROUP BY 1, 2""",
        *columns(groups, 2),
        since,
    )
    return {(r["hazard"], r["region_code"]): r["n"] for r in rows}


async def set_dispatch_many(
    conn: Conn, rows: Sequence[tuple[str, int]], state: Dispatch, at: datetime | None = None
) -> None:
    """The dispatch state of several (warning id, version); ``at`` for ``scheduled``."""
    if rows:
        await conn.execute(
            """UPDATE alerting.warning_versions v
                  SET dispatch = $3,
                      dispatch_at = CASE WHEN $3 = 'scheduled' THEN $4 ELSE v.dispatch_at END
                 FROM unnest($1::text[], $2::int[]) AS x(w, n)
                WHERE v.warning_id = x.w AND v.version = x.n""",
            *columns(rows, 2),
            state,
            at,
        )


async def supersede_earlier_many(conn: Conn, rows: Sequence[tuple[str, int]]) -> set[str]:
    """Versions before each (warning id, version) that have not gone out never will; the ids
    of the warnings of which an earlier version did (their recipients were told)."""
    later = [r for r in rows if r[1] > 1]  # a first version has nothing before it
    if not later:
        return set()
    ids, versions = [r[0] for r in later], [r[1] for r in later]
    await conn.execute(
        """UPDATE alerting.warning_versions v SET dispatch = $3
             FROM unnest($1::text[], $2::int[]) AS x(w, n)
            WHERE v.warning_id = x.w AND v.version < x.n AND v.dispatch = ANY($4::text[])""",
        ids,
        versions,
        Dispatch.superseded,
        list(WAITING),
    )
    told = await conn.fetch(
        """SELECT x.w FROM unnest($1::text[], $2::int[]) AS x(w, n)
            WHERE EXISTS (SELECT 1 FROM alerting.warning_versions v
                           WHERE v.warning_id = x.w AND v.version < x.n
                             AND v.dispatch = ANY($3::text[]))""",
        ids,
        versions,
        list(TOLD),
    )
    return {r["w"] for r in told}


async def dispatched_many(conn: Conn, warning_ids: Sequence[str], at: datetime) -> None:
    if warning_ids:
        await conn.execute(
            "UPDATE alerting.warnings SET last_dispatch_at = $2 WHERE id = ANY($1::text[])",
            list(warning_ids),
            at,
        )
