"""The risk consumer: readings in, level changes out.

In one database transaction per batch: lock the partitions' applied offsets, skip what was
applied already, load the (station, rule) states, evaluate, write the new states, the events
(outbox) and the new offsets. The outbox relay then publishes the events to ``risk.events.v1``.
A crash at any point re-delivers the batch, which then applies nothing twice and loses no event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from prometheus_client import Counter
from pydantic import ValidationError

from services.risk.engine import LevelChange, ReadingIn, RuleState, evaluate
from services.risk.stations import StationRules
from shared.clock import Clock
from shared.contracts import Evidence, Level, Reading, RiskEvent, Topics, stable_id
from shared.errors import DatabaseError
from shared.kafka import BatchResult, InvalidMessage, Message
from shared.outbox import OutboxRelay, enqueue

log = logging.getLogger(__name__)

RISK_EVENTS = Counter("qianshao_risk_events_total", "Risk events produced", ["level", "change"])


def to_event(change: LevelChange, now: datetime) -> RiskEvent:
    r = change.reading
    return RiskEvent(
        event_id=stable_id(
            "risk",
            change.station_id,
            change.rule.rule_id,
            change.previous.name,
            change.level.name,
            r.ts.isoformat(),
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
        urgency="Immediate",
        event_time=r.ts,
        evidence=Evidence(
            rule_id=change.rule.rule_id,
            metric=r.metric,
            value=r.value,
            threshold=change.evidence.get("threshold"),
            direction=change.rule.direction,
            readings=[{"event_id": r.event_id, "ts": r.ts.isoformat(), "value": r.value}],
            source_clause=change.rule.source_clause,
        ),
    )


class RiskHandler:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        rules: StationRules,
        relay: OutboxRelay,
        topics: Topics,
        clock: Clock,
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._relay = relay
        self._topics = topics
        self._clock = clock

    async def process(self, batch: Sequence[Message]) -> BatchResult:
        now = self._clock.now()
        dead: list[InvalidMessage] = []
        readings: list[tuple[Message, ReadingIn]] = []
        for m in batch:
            try:
                ev = Reading.model_validate_json(m.value)
            except ValidationError as exc:
                dead.append(InvalidMessage(m, "invalid_reading", str(exc)[:500]))
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
                    ),
                )
            )
        rules = await self._rules.get_many(r.station_id for _, r in readings)
        try:
            n_events = await self._apply(readings, rules, now)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(f"risk state write failed: {exc!r}") from exc
        if n_events:
            self._relay.wake()
        return BatchResult(dead_letters=dead)

    async def _apply(
        self,
        readings: list[tuple[Message, ReadingIn]],
        rules: dict[str, list],  # type: ignore[type-arg]
        now: datetime,
    ) -> int:
        partitions = sorted({(m.topic, m.partition) for m, _ in readings})
        if not partitions:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
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
            fresh = [(m, r) for m, r in readings if m.offset > applied[(m.topic, m.partition)]]
            keys = {
                (r.station_id, rule.rule_id)
                for _, r in fresh
                for rule in rules.get(r.station_id, [])
            }
            states: dict[tuple[str, str], RuleState] = {}
            if keys:
                rows = await conn.fetch(
                    """SELECT s.station_id, s.rule_id, s.level, s.since, s.last_ts, s.last_value
                         FROM risk.rule_state s
                         JOIN unnest($1::text[], $2::text[]) AS k(sid, rid)
                           ON s.station_id = k.sid AND s.rule_id = k.rid
                          FOR UPDATE OF s""",
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                )
                for row in rows:
                    states[(row["station_id"], row["rule_id"])] = RuleState(
                        Level(row["level"]), row["since"], row["last_ts"], row["last_value"]
                    )
            changed: dict[tuple[str, str], tuple[RuleState, str, str, str]] = {}
            events: list[RiskEvent] = []
            for _m, r in fresh:
                for rule in rules.get(r.station_id, []):
                    key = (r.station_id, rule.rule_id)
                    state = states.get(key, RuleState())
                    new_state, changes = evaluate(rule, state, r, now)
                    if new_state != state:
                        states[key] = new_state
                        changed[key] = (new_state, rule.hazard, r.region_code, rule.rule_id)
                    events.extend(to_event(c, now) for c in changes)
            if changed:
                await conn.executemany(
                    """INSERT INTO risk.rule_state
                           (station_id, rule_id, hazard, region_code, level, since, last_ts,
                            last_value, updated_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
                       ON CONFLICT (station_id, rule_id) DO UPDATE SET
                           hazard = EXCLUDED.hazard, region_code = EXCLUDED.region_code,
                           level = EXCLUDED.level, since = EXCLUDED.since,
                           last_ts = EXCLUDED.last_ts, last_value = EXCLUDED.last_value,
                           updated_at = now()""",
                    [
                        (k[0], k[1], hazard, region, int(s.level), s.since, s.last_ts, s.last_value)
                        for k, (s, hazard, region, _rid) in changed.items()
                    ],
                )
            for ev in events:
                await conn.execute(
                    """UPDATE risk.rule_state SET evidence = $3
                        WHERE station_id = $1 AND rule_id = $2""",
                    ev.station_id,
                    ev.rule_id,
                    ev.evidence.model_dump(mode="json"),
                )
                RISK_EVENTS.labels(ev.level, ev.change).inc()
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
            last: dict[tuple[str, int], int] = {}
            for m, _ in readings:
                last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), -1), m.offset)
            await conn.executemany(
                """UPDATE risk.applied_offsets SET "offset" = GREATEST("offset", $3)
                    WHERE topic = $1 AND partition = $2""",
                [(t, p, o) for (t, p), o in last.items()],
            )
        return len(events)
