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
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from prometheus_client import Counter
from pydantic import ValidationError

from services.risk.adapters import state as db
from services.risk.adapters.stations import StationPlans
from services.risk.adapters.upstream import load_upstream
from services.risk.domain.engine import ReadingIn, StationState, evaluate, reassess
from services.risk.domain.events import RebuildResult, nodata_event, to_event
from services.risk.domain.stations import StationInfo
from shared.clock import Clock
from shared.contracts import ReadingDecoder, RiskEvent, Topics, UpstreamWarning
from shared.errors import DatabaseError, NotFound
from shared.kafka import BatchResult, InvalidMessage, Received, no_value
from shared.outbox import OutboxRelay, enqueue

log = logging.getLogger(__name__)

RISK_EVENTS = Counter(
    "qianshao_risk_events_total", "Risk events produced", ["scope", "level", "change"]
)
LATE_READINGS = Counter(
    "qianshao_risk_late_readings_total", "Readings later than the window tolerance (not applied)"
)


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

    async def process(self, batch: Sequence[Received]) -> BatchResult:
        now = self._clock.now()
        dead: list[InvalidMessage] = []
        readings: list[tuple[Received, ReadingIn]] = []
        warnings: list[tuple[Received, UpstreamWarning]] = []
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
        batch: Sequence[Received],
        readings: list[tuple[Received, ReadingIn]],
        warnings: list[tuple[Received, UpstreamWarning]],
        infos: dict[str, StationInfo],
        now: datetime,
    ) -> int:
        partitions = sorted({(m.topic, m.partition) for m in batch})
        if not partitions:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            applied = await db.lock_offsets(conn, partitions)
            fresh = [(m, r) for m, r in readings if m.offset > applied[(m.topic, m.partition)]]
            fresh_w = [(m, w) for m, w in warnings if m.offset > applied[(m.topic, m.partition)]]
            changed_prefixes = await db.record_upstream(conn, [w for _, w in fresh_w], now)
            ctx = await load_upstream(conn, now)
            work = db.Work()
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
            await db.load_states(conn, ids, infos, work)
            for sid in sorted(work.new):
                # a station without a checkpoint (new here, or its state lost): its state is
                # rebuilt from the readings ingest stored before this batch's first one
                if sid in first:
                    published = await db.published_levels(conn, sid)
                    _n, rebuilt = await db.rebuild(
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
        self, conn: db.Conn, work: db.Work, infos: dict[str, StationInfo], now: datetime
    ) -> list[RiskEvent]:
        """Write the touched states, the per-rule view, the region roll-ups and the events."""
        events = [to_event(c, now) for c in work.changes]
        events += [nodata_of(sid, work, False, now) for sid in work.back_online]
        await db.save_states(conn, work, infos)
        events += await db.roll_up(conn, work.changes, now)
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
            work = db.Work()
            row = await conn.fetchrow(
                "SELECT silent FROM risk.station_state WHERE station_id = $1 FOR UPDATE",
                station_id,
            )
            work.silent[station_id] = bool(row and row["silent"])
            published = await db.published_levels(conn, station_id)
            st = work.states[station_id] = StationState(station_id, info.region_code)
            work.new.add(station_id)  # every rule's row is written again
            ctx = await load_upstream(conn, now)
            n, work.changes = await db.rebuild(conn, st, info, published, None, ctx, at=now)
            events = await self._publish(conn, work, infos, now)
        if events:
            self._relay.wake()
        return RebuildResult(
            station_id=station_id,
            readings=n,
            changes=[to_event(c, now) for c in work.changes],
        )


def nodata_of(station_id: str, work: db.Work, silent: bool, now: datetime) -> RiskEvent:
    st = work.states[station_id]
    return nodata_event(station_id, st.region_code, st.last_seen, silent, now)
