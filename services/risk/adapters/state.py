"""The risk schema as the consumer uses it: applied offsets, station states and the per-rule
view, the region roll-ups, upstream warnings, and the rebuild of a state from ingest's stored
readings. One transaction's connection is passed in; nothing here commits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.risk.domain.engine import (
    LevelChange,
    StationState,
    history_horizon,
    level_diff,
    replay,
)
from services.risk.domain.regions import AdminLevel, admin_prefix, region_of
from services.risk.domain.stations import StationInfo
from services.risk.domain.upstream import UpstreamView, hazard_of_event, warning_prefix
from shared.contracts import Evidence, Level, RiskEvent, UpstreamWarning, stable_id

ADMIN_LEVELS: tuple[AdminLevel, ...] = ("village", "township", "county")

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass
class Work:
    """What one transaction touched."""

    states: dict[str, StationState] = field(default_factory=dict)
    new: set[str] = field(default_factory=set)
    changes: list[LevelChange] = field(default_factory=list)
    back_online: list[str] = field(default_factory=list)
    silent: dict[str, bool] = field(default_factory=dict)


async def published_levels(conn: Conn, station_id: str) -> dict[str, Level]:
    rows = await conn.fetch(
        "SELECT rule_id, level FROM risk.rule_state WHERE station_id = $1", station_id
    )
    return {r["rule_id"]: Level(r["level"]) for r in rows}


async def rebuild(
    conn: Conn,
    st: StationState,
    info: StationInfo,
    published: dict[str, Level],
    before: datetime | None,
    ctx: UpstreamView,
    *,
    at: datetime | None = None,
) -> tuple[int, list[LevelChange]]:
    """Replay the stored observations of the last :func:`history_horizon` before ``before`` (or
    up to the station's newest reading) into the fresh state ``st``. Returns the readings
    replayed and the changes against the ``published`` levels, judged at ``at`` (default: the
    newest reading replayed)."""
    plan = info.plan
    metrics = sorted(plan.windows.keys() | plan.daily.keys() | set(plan.by_metric))
    rows = await conn.fetch(
        """WITH upto AS (
               SELECT coalesce($3, (SELECT max(ts) FROM ingest.readings
                                     WHERE station_id = $1 AND metric = ANY($2::text[])
                                       AND quality < 2)) AS t)
           SELECT metric, extract(epoch FROM ts)::float8 AS t, value FROM ingest.readings
            WHERE station_id = $1 AND metric = ANY($2::text[]) AND quality < 2
              AND ts > (SELECT t FROM upto) - $4::float8 * interval '1 second'
              AND ts <= (SELECT t FROM upto) AND ($3::timestamptz IS NULL OR ts < $3)
            ORDER BY ts""",
        st.station_id,
        metrics,
        before,
        history_horizon(plan),
    )
    if not rows:
        # nothing to rebuild from: the published levels stand (no data is not an all-clear)
        for rule_id, level in published.items():
            st.rule(rule_id).level = level
        return 0, []
    n = replay(plan, st, ((r["metric"], r["t"], r["value"]) for r in rows), ctx)
    when = at.timestamp() if at is not None else (st.last_seen or 0.0)
    return n, level_diff(plan, st, published, when)


async def lock_offsets(conn: Conn, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    applied: dict[tuple[str, int], int] = {}
    for topic, part in partitions:
        await conn.execute(
            """INSERT INTO risk.applied_offsets (topic, partition, "offset")
               VALUES ($1, $2, -1) ON CONFLICT DO NOTHING""",
            topic,
            part,
        )
        applied[(topic, part)] = await conn.fetchval(
            """SELECT "offset" FROM risk.applied_offsets
                WHERE topic=$1 AND partition=$2 FOR UPDATE""",
            topic,
            part,
        )
    return applied


async def load_states(conn: Conn, ids: set[str], infos: dict[str, StationInfo], work: Work) -> None:
    if not ids:
        return
    rows = await conn.fetch(
        """SELECT station_id, state, silent FROM risk.station_state
            WHERE station_id = ANY($1::text[]) ORDER BY station_id FOR UPDATE""",
        sorted(ids),
    )
    for row in rows:
        sid = row["station_id"]
        work.states[sid] = StationState.load(sid, row["state"], infos[sid].plan)
        work.silent[sid] = row["silent"]
    for sid in ids - work.states.keys():
        work.states[sid] = StationState(sid, infos[sid].region_code)
        work.new.add(sid)


async def save_states(conn: Conn, work: Work, infos: dict[str, StationInfo]) -> None:
    if not work.states:
        return
    await conn.executemany(
        """INSERT INTO risk.station_state (station_id, region_code, state, last_seen, silent)
           VALUES ($1, $2, $3, to_timestamp($4), $5)
           ON CONFLICT (station_id) DO UPDATE SET
               region_code = EXCLUDED.region_code, state = EXCLUDED.state,
               last_seen = EXCLUDED.last_seen, silent = EXCLUDED.silent, updated_at = now()""",
        [
            (sid, st.region_code, st.dump(), st.last_seen, work.silent.get(sid, False))
            for sid, st in work.states.items()
        ],
    )
    # the per-rule view: every rule of a new station, and every rule whose level changed
    rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    for sid in work.new:
        st = work.states[sid]
        for rule in infos[sid].plan.rules:
            rs = st.rule(rule.rule_id)
            rows[(sid, rule.rule_id)] = _rule_row(sid, st, rule.rule_id, rule.hazard, rule, rs)
    for c in work.changes:
        st = work.states[c.station_id]
        rs = st.rule(c.rule.rule_id)
        rows[(c.station_id, c.rule.rule_id)] = _rule_row(
            c.station_id, st, c.rule.rule_id, c.rule.hazard, c.rule, rs
        )
    if rows:
        await conn.executemany(
            """INSERT INTO risk.rule_state
                   (station_id, rule_id, hazard, region_code, level, since, last_value, evidence,
                    pack, urgency, updated_at)
               VALUES ($1, $2, $3, $4, $5, to_timestamp($6), $7, $8, $9, $10, now())
               ON CONFLICT (station_id, rule_id) DO UPDATE SET
                   hazard = EXCLUDED.hazard, region_code = EXCLUDED.region_code,
                   level = EXCLUDED.level, since = EXCLUDED.since,
                   last_value = EXCLUDED.last_value, evidence = EXCLUDED.evidence,
                   pack = EXCLUDED.pack, urgency = EXCLUDED.urgency, updated_at = now()""",
            list(rows.values()),
        )


def _rule_row(
    sid: str, st: StationState, rule_id: str, hazard: str, rule: Any, rs: Any
) -> tuple[Any, ...]:
    value = rs.evidence.get("value") if rs.evidence else None
    return (
        sid,
        rule_id,
        hazard,
        st.region_code,
        int(rs.level),
        rs.since,
        float(value) if isinstance(value, int | float) else None,
        rs.evidence,
        rule.pack,
        "Expected" if rule.expected else "Immediate",
    )


async def roll_up(conn: Conn, changes: Iterable[LevelChange], now: datetime) -> list[RiskEvent]:
    """Recompute the regions (village, township, county) of the stations whose levels changed;
    an event for each region whose level changed."""
    cause: dict[tuple[str, str], str] = {}
    for c in changes:
        for lvl in ADMIN_LEVELS:
            key = (admin_prefix(c.region_code, lvl), c.rule.hazard)
            cause.setdefault(key, stable_id(c.station_id, c.rule.rule_id, c.at))
    events = []
    # Lock each region's row before counting (in a stable order, so replicas never deadlock):
    # under READ COMMITTED the count, a later statement, then sees every station another replica
    # committed while this one waited, and the last writer always writes the true level.
    for (prefix, hazard), why in sorted(cause.items()):
        admin: AdminLevel = {6: "county", 9: "township", 12: "village"}[len(prefix)]  # type: ignore[assignment]
        code = region_of(prefix.ljust(12, "0"), admin)
        await conn.execute(
            """INSERT INTO risk.region_level (region_code, hazard, admin_level, level, counts)
               VALUES ($1, $2, $3, 0, '{}') ON CONFLICT DO NOTHING""",
            code,
            hazard,
            admin,
        )
        prev_raw = await conn.fetchval(
            """SELECT level FROM risk.region_level WHERE region_code = $1 AND hazard = $2
               FOR UPDATE""",
            code,
            hazard,
        )
        rows = await conn.fetch(
            """SELECT lvl, count(*) AS n FROM (
                   SELECT station_id, max(level) AS lvl FROM risk.rule_state
                    WHERE hazard = $1 AND region_code LIKE $2 || '%' GROUP BY station_id) s
               GROUP BY lvl""",
            hazard,
            prefix,
        )
        counts = {lv.name: 0 for lv in Level}
        for r in rows:
            counts[Level(r["lvl"]).name] = r["n"]
        level = max((lv for lv in Level if counts[lv.name]), default=Level.none)
        await conn.execute(
            """UPDATE risk.region_level SET level = $3, counts = $4, updated_at = now()
                WHERE region_code = $1 AND hazard = $2""",
            code,
            hazard,
            int(level),
            counts,
        )
        prev = Level(prev_raw or 0)
        if level == prev:
            continue
        change = "cleared" if level == Level.none else "raised" if level > prev else "lowered"
        events.append(
            RiskEvent(
                event_id=stable_id("region", code, hazard, prev.name, level.name, why),
                produced_at=now,
                scope="region",
                region_code=code,
                hazard=hazard,
                rule_id=f"rollup:{admin}",
                previous_level=prev.name,
                level=level.name,
                change=change,
                event_time=now,
                evidence=Evidence(
                    rule_id=f"rollup:{admin}",
                    metric="station_levels",
                    value=float(counts[level.name]),
                    source_clause=f"most severe station level in the {admin}",
                    signal=f"max(station level) over {admin} {code}",
                    criteria=[{"counts": counts}],
                ),
            )
        )
    return events


async def record_upstream(conn: Conn, warnings: list[UpstreamWarning], now: datetime) -> set[str]:
    """Store upstream warnings; return the region prefixes whose warnings changed."""
    prefixes: set[str] = set()
    for w in warnings:
        if w.status != "Actual":
            continue  # drills and tests do not change real risk
        referenced = [r.split(",")[1] for r in w.references if r.count(",") >= 2]
        if referenced:
            rows = await conn.fetch(
                """UPDATE risk.upstream_warnings SET active = false
                    WHERE identifier = ANY($1::text[]) RETURNING region_codes""",
                referenced,
            )
            for r in rows:
                prefixes.update(warning_prefix(c) for c in r["region_codes"])
        if w.msg_type != "Cancel":
            await conn.execute(
                """INSERT INTO risk.upstream_warnings
                       (identifier, sender, hazard, level, region_codes, sent, expires, active)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, true)
                   ON CONFLICT (identifier) DO NOTHING""",
                w.identifier,
                w.sender,
                hazard_of_event(w.event),
                int(Level[w.level]),
                w.region_codes,
                w.sent,
                w.expires,
            )
        prefixes.update(warning_prefix(c) for c in w.region_codes)
    return prefixes
