"""The risk consumer: readings and upstream warnings in, level changes out.

One database transaction per batch:

1. lock the partitions' applied offsets and skip what was applied already;
2. record upstream warnings (Alert/Update/Cancel) — the context of compound rules;
3. lock and load the touched stations' states, run the pure engine over the readings in order,
   judge compound rules again for stations whose region an upstream warning changed;
4. write the states, the per-rule view, the region roll-ups, the events (outbox) and the offsets.

The outbox relay then publishes to ``risk.events.v1``. A crash at any point re-delivers the batch,
which then applies nothing twice and loses no event. Replicas split the work by station key
(readings are keyed by station id); the row locks keep a rebalance from applying one station twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from services.risk.engine import (
    AdminLevel,
    LevelChange,
    ReadingIn,
    StationState,
    admin_prefix,
    evaluate,
    history_horizon,
    level_diff,
    reassess,
    region_of,
    replay,
)
from services.risk.stations import StationInfo, StationPlans
from services.risk.upstream import UpstreamView, hazard_of_event, warning_prefix
from shared.clock import Clock
from shared.contracts import (
    Evidence,
    Level,
    ReadingDecoder,
    RiskEvent,
    Topics,
    UpstreamWarning,
    stable_id,
)
from shared.errors import DatabaseError, NotFound
from shared.kafka import BatchResult, InvalidMessage, Message, no_value
from shared.outbox import OutboxRelay, enqueue

log = logging.getLogger(__name__)

RISK_EVENTS = Counter(
    "qianshao_risk_events_total", "Risk events produced", ["scope", "level", "change"]
)
LATE_READINGS = Counter(
    "qianshao_risk_late_readings_total", "Readings later than the window tolerance (not applied)"
)

ADMIN_LEVELS: tuple[AdminLevel, ...] = ("village", "township", "county")

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def to_event(change: LevelChange, now: datetime) -> RiskEvent:
    ev = change.evidence
    return RiskEvent(
        event_id=stable_id(
            "risk",
            change.station_id,
            change.rule.rule_id,
            change.previous.name,
            change.level.name,
            repr(change.at),
        ),
        produced_at=now,
        scope="station",
        station_id=change.station_id,
        region_code=change.region_code,
        hazard=change.rule.hazard,
        rule_id=change.rule.rule_id,
        previous_level=change.previous.name,
        level=change.level.name,
        change=change.change,
        urgency="Expected" if change.rule.expected else "Immediate",
        event_time=change.event_time,
        evidence=evidence_of(change.rule.rule_id, ev, below=_op(change) == "<="),
    )


def evidence_of(rule_id: str, ev: dict[str, Any], *, below: bool) -> Evidence:
    """The event's evidence from a rule state's evidence (what the engine recorded)."""
    reading = ev.get("reading")
    criteria = list(ev.get("criteria", []))
    return Evidence(
        rule_id=rule_id,
        metric=reading["metric"] if reading else "",
        value=float(ev["value"]) if ev.get("value") is not None else 0.0,
        threshold=ev.get("threshold"),
        direction="below" if below else "above",
        readings=[reading] if reading else [],
        source_clause="; ".join(c["source"] for c in criteria if c.get("source")),
        signal=str(ev.get("signal", "")),
        criteria=criteria,
    )


def _op(change: LevelChange) -> str:
    for _lvl, c in change.rule.criteria():
        return c.op
    return ">="


@dataclass
class _Batch:
    """What one transaction touched."""

    states: dict[str, StationState] = field(default_factory=dict)
    new: set[str] = field(default_factory=set)
    changes: list[LevelChange] = field(default_factory=list)
    back_online: list[str] = field(default_factory=list)
    silent: dict[str, bool] = field(default_factory=dict)


class RiskHandler:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        plans: StationPlans,
        relay: OutboxRelay,
        topics: Topics,
        clock: Clock,
    ) -> None:
        self._pool = pool
        self._plans = plans
        self._relay = relay
        self._topics = topics
        self._clock = clock
        self._decoder = ReadingDecoder()

    async def process(self, batch: Sequence[Message]) -> BatchResult:
        now = self._clock.now()
        dead: list[InvalidMessage] = []
        readings: list[tuple[Message, ReadingIn]] = []
        warnings: list[tuple[Message, UpstreamWarning]] = []
        decode = self._decoder.decode
        for m in batch:
            if m.value is None:
                dead.append(no_value(m))
                continue
            try:
                if m.topic == self._topics.warnings_upstream:
                    warnings.append((m, UpstreamWarning.model_validate_json(m.value)))
                    continue
                ev = decode(m.value)
            except ValidationError as exc:
                dead.append(InvalidMessage(m, "invalid_event", str(exc)[:500]))
                continue
            readings.append(
                (
                    m,
                    ReadingIn(
                        ev.station_id,
                        ev.region_code,
                        ev.metric,
                        ev.ts,
                        ev.value,
                        ev.quality,
                        ev.event_id,
                        ev.kind,
                        ev.issued_at,
                    ),
                )
            )
        infos = await self._plans.get_many(r.station_id for _, r in readings)
        try:
            n_events = await self._apply(batch, readings, warnings, infos, now)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(f"risk state write failed: {exc!r}") from exc
        if n_events:
            self._relay.wake()
        return BatchResult(dead_letters=dead)

    async def _apply(
        self,
        batch: Sequence[Message],
        readings: list[tuple[Message, ReadingIn]],
        warnings: list[tuple[Message, UpstreamWarning]],
        infos: dict[str, StationInfo],
        now: datetime,
    ) -> int:
        partitions = sorted({(m.topic, m.partition) for m in batch})
        if not partitions:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            applied = await _lock_offsets(conn, partitions)
            fresh = [(m, r) for m, r in readings if m.offset > applied[(m.topic, m.partition)]]
            fresh_w = [(m, w) for m, w in warnings if m.offset > applied[(m.topic, m.partition)]]
            changed_prefixes = await _record_upstream(conn, [w for _, w in fresh_w], now)
            ctx = await UpstreamView.load(conn, now)
            work = _Batch()
            # stations an upstream change may concern: those with compound rules in the regions
            for prefix in changed_prefixes:
                for info in await self._plans.in_region(prefix):
                    if info.plan.compound:
                        infos.setdefault(info.station_id, info)
            compound_ids = {
                sid
                for sid, info in infos.items()
                if info.plan.compound
                and any(info.region_code.startswith(p) for p in changed_prefixes)
            }
            ids = {r.station_id for _, r in fresh if r.station_id in infos} | compound_ids
            first: dict[str, datetime] = {}
            for _, r in fresh:
                if r.kind == "observation" and (
                    r.station_id not in first or r.ts < first[r.station_id]
                ):
                    first[r.station_id] = r.ts
            await _load_states(conn, ids, infos, work)
            for sid in sorted(work.new):
                # a station without a checkpoint (new here, or its state lost): its state is
                # rebuilt from the readings ingest stored before this batch's first one
                if sid in first:
                    published = await _published_levels(conn, sid)
                    _n, rebuilt = await _rebuild(
                        conn, work.states[sid], infos[sid], published, first[sid], ctx
                    )
                    work.changes.extend(rebuilt)
            for _m, r in fresh:
                found = infos.get(r.station_id)
                if found is None:
                    continue
                info = found
                st = work.states[r.station_id]
                late_before = st.late
                was_silent = work.silent.get(r.station_id, False)
                _st, changes = evaluate(info.plan, st, r, now, ctx)
                if st.late > late_before:
                    LATE_READINGS.inc()
                if was_silent and r.kind == "observation":
                    work.silent[r.station_id] = False
                    work.back_online.append(r.station_id)
                work.changes.extend(changes)
            at = now.timestamp()
            for sid in sorted(compound_ids):
                if sid in work.states and sid not in work.new:
                    work.changes.extend(reassess(infos[sid].plan, work.states[sid], at, ctx))
            events = await self._publish(conn, work, infos, now)
            last: dict[tuple[str, int], int] = {}
            for m in batch:
                key = (m.topic, m.partition)
                last[key] = max(last.get(key, -1), m.offset)
            await conn.executemany(
                """UPDATE risk.applied_offsets SET "offset" = GREATEST("offset", $3)
                    WHERE topic = $1 AND partition = $2""",
                [(t, p, o) for (t, p), o in last.items()],
            )
        return len(events)

    async def _publish(
        self, conn: Conn, work: _Batch, infos: dict[str, StationInfo], now: datetime
    ) -> list[RiskEvent]:
        """Write the touched states, the per-rule view, the region roll-ups and the events."""
        events = [to_event(c, now) for c in work.changes]
        events += [_nodata_event(sid, work, False, now) for sid in work.back_online]
        await _save_states(conn, work, infos)
        events += await _roll_up(conn, work.changes, now)
        await enqueue(
            conn,
            "risk",
            (
                (
                    ev.event_id,
                    self._topics.risk_events,
                    ev.station_id or ev.region_code,
                    ev.model_dump(mode="json"),
                )
                for ev in events
            ),
        )
        for ev in events:
            RISK_EVENTS.labels(ev.scope, ev.level, ev.change).inc()
        return events

    async def rebuild(self, station_id: str) -> RebuildResult:
        """Rebuild one station's state from the readings ingest stored (after its rules changed,
        or to repair a checkpoint); announce every rule whose level differs from the published
        one. Takes the station's row lock, so it never races the consumer."""
        infos = await self._plans.get_many([station_id])
        info = infos.get(station_id)
        if info is None:
            raise NotFound(f"no station {station_id!r}")
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            work = _Batch()
            row = await conn.fetchrow(
                "SELECT silent FROM risk.station_state WHERE station_id = $1 FOR UPDATE",
                station_id,
            )
            work.silent[station_id] = bool(row and row["silent"])
            published = await _published_levels(conn, station_id)
            st = work.states[station_id] = StationState(station_id, info.region_code)
            work.new.add(station_id)  # every rule's row is written again
            ctx = await UpstreamView.load(conn, now)
            n, work.changes = await _rebuild(conn, st, info, published, None, ctx, at=now)
            events = await self._publish(conn, work, infos, now)
        if events:
            self._relay.wake()
        return RebuildResult(
            station_id=station_id,
            readings=n,
            changes=[to_event(c, now) for c in work.changes],
        )


class RebuildResult(BaseModel):
    station_id: str
    readings: int
    changes: list[RiskEvent]


async def _published_levels(conn: Conn, station_id: str) -> dict[str, Level]:
    rows = await conn.fetch(
        "SELECT rule_id, level FROM risk.rule_state WHERE station_id = $1", station_id
    )
    return {r["rule_id"]: Level(r["level"]) for r in rows}


async def _rebuild(
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


async def _lock_offsets(
    conn: Conn, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
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


async def _load_states(
    conn: Conn, ids: set[str], infos: dict[str, StationInfo], work: _Batch
) -> None:
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


async def _save_states(conn: Conn, work: _Batch, infos: dict[str, StationInfo]) -> None:
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


async def _roll_up(conn: Conn, changes: Iterable[LevelChange], now: datetime) -> list[RiskEvent]:
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


def _nodata_event(station_id: str, work: _Batch, silent: bool, now: datetime) -> RiskEvent:
    st = work.states[station_id]
    return nodata_event(station_id, st.region_code, st.last_seen, silent, now)


def nodata_event(
    station_id: str, region_code: str, last_seen: float | None, silent: bool, now: datetime
) -> RiskEvent:
    seen = datetime.fromtimestamp(last_seen, UTC) if last_seen is not None else now
    return RiskEvent(
        event_id=stable_id("nodata", station_id, silent, repr(last_seen)),
        produced_at=now,
        kind="no_data",
        scope="station",
        station_id=station_id,
        region_code=region_code,
        hazard="no_data",
        rule_id="no_data",
        previous_level="none" if silent else "blue",
        level="blue" if silent else "none",
        change="raised" if silent else "cleared",
        event_time=now if silent else seen,
        evidence=Evidence(
            rule_id="no_data",
            metric="last_seen",
            value=last_seen or 0.0,
            source_clause="silent for more than k × the station's reporting interval",
            readings=[{"last_seen": seen.isoformat()}],
        ),
    )


async def _record_upstream(conn: Conn, warnings: list[UpstreamWarning], now: datetime) -> set[str]:
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
