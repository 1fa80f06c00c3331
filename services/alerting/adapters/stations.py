"""The station levels that stand in warnings (``alerting.warning_stations``) and the stations in
maintenance, as the pipeline stages read and write them, one warning or a wave's at a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.alerting.domain.states import OPEN
from shared.contracts import Level, RiskEvent
from shared.db import Conn, columns


async def rule_levels(conn: Conn, warning_id: str) -> dict[tuple[str, str], Level]:
    """The levels that stand in a warning, by (station, rule)."""
    rows = await conn.fetch(
        "SELECT station_id, rule_id, level FROM alerting.warning_stations WHERE warning_id = $1",
        warning_id,
    )
    return {(r["station_id"], r["rule_id"]): Level(r["level"]) for r in rows}


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


async def rule_levels_of(
    conn: Conn, warning_ids: Sequence[str]
) -> dict[str, dict[tuple[str, str], Level]]:
    """The levels that stand in each of several warnings, by (station, rule)."""
    out: dict[str, dict[tuple[str, str], Level]] = {w: {} for w in warning_ids}
    if not warning_ids:
        return out
    rows = await conn.fetch(
        """SELECT warning_id, station_id, rule_id, level FROM alerting.warning_stations
            WHERE warning_id = ANY($1::text[])""",
        list(warning_ids),
    )
    for r in rows:
        out[r["warning_id"]][(r["station_id"], r["rule_id"])] = Level(r["level"])
    return out


async def in_maintenance_many(conn: Conn, subjects: Sequence[tuple[str, datetime]]) -> list[bool]:
    """For each (station, time), whether the station is in maintenance then."""
    rows = await conn.fetch(
        """SELECT EXISTS (SELECT 1 FROM alerting.maintenance m WHERE m.station_id = x.s
                             AND m.starts_at <= x.at AND m.ends_at > x.at) AS yes
             FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS x(s, at, i)
            ORDER BY x.i""",
        [s for s, _ in subjects],
        [at for _, at in subjects],
    )
    return [r["yes"] for r in rows]


async def set_stations(conn: Conn, rows: Sequence[tuple[str, RiskEvent]]) -> None:
    """Each event's (station, rule) level in its warning, and when risk last stated it."""
    if not rows:
        return
    await conn.execute(
        """INSERT INTO alerting.warning_stations
               (warning_id, station_id, rule_id, level, event_id, seen_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[],
                                $6::timestamptz[])
           ON CONFLICT (warning_id, station_id, rule_id)
           DO UPDATE SET level = EXCLUDED.level, event_id = EXCLUDED.event_id,
                         updated_at = now(),
                         seen_at = greatest(warning_stations.seen_at, EXCLUDED.seen_at)""",
        [w for w, _ in rows],
        [e.station_id for _, e in rows],
        [e.rule_id for _, e in rows],
        [int(Level.parse(e.level)) for _, e in rows],
        [e.event_id for _, e in rows],
        [e.produced_at for _, e in rows],
    )


async def drop_stations(conn: Conn, rows: Sequence[tuple[str, str, str]]) -> None:
    """The (warning id, station, rule) levels gone from their warnings."""
    if rows:
        await conn.execute(
            """DELETE FROM alerting.warning_stations ws
                USING unnest($1::text[], $2::text[], $3::text[]) AS x(w, s, r)
                WHERE ws.warning_id = x.w AND ws.station_id = x.s AND ws.rule_id = x.r""",
            *columns(rows, 3),
        )
