"""Standing announcements: risk says again, every ``every_s``, what still stands.

Risk publishes a level when it changes, and silence never clears one, so on its own the stream
cannot tell a flood that goes on from a station whose rule was dropped or a risk service that
died. Each period this job re-announces, as ``change="standing"`` events on ``risk.events.v1``:

- every station rule level above none (alerting keeps the warnings they back alive);
- every county roll-up, ``none`` included (the four-colour map, and risk's heartbeat: a consumer
  that hears these knows risk is alive even when nothing stands).

The rows are read ``FOR SHARE`` in the transaction that writes the outbox, so a level the
consumer changes at the same moment is announced either before its change (the change's outbox
row comes later) or not at all: a standing announcement never follows the all-clear it predates.
The event id is derived from the period, so replicas sweeping together write one event each.
"""

from __future__ import annotations

import logging

import asyncpg
from prometheus_client import Counter

from services.risk.domain.events import county_standing, station_standing
from shared.clock import Clock
from shared.contracts import Topics
from shared.outbox import OutboxRelay, enqueue
from shared.periodic import Periodic

log = logging.getLogger(__name__)

ANNOUNCED = Counter(
    "qianshao_risk_standing_announced_total", "Standing levels re-announced", ["scope"]
)


class StandingAnnouncer:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        relay: OutboxRelay,
        topics: Topics,
        clock: Clock,
        every_s: float,
    ) -> None:
        self._pool = pool
        self._relay = relay
        self._topics = topics
        self._clock = clock
        self._every_s = every_s
        # ticks twice a period (a period announced already writes nothing), so drift between
        # ticks never leaves a period unannounced
        self._job = Periodic("standing levels", every_s / 2, self.announce_once)

    def stop(self) -> None:
        self._job.stop()

    async def run(self) -> None:
        await self._job.run()

    async def announce_once(self) -> int:
        """One announcement of everything that stands; returns the number of events written
        (0 when this period was announced already, by this replica or another)."""
        now = self._clock.now()
        period = int(now.timestamp() // self._every_s)
        topic = self._topics.risk_events
        async with self._pool.acquire() as conn, conn.transaction():
            stations = await conn.fetch(
                """SELECT station_id, rule_id, hazard, region_code, level, evidence, urgency
                     FROM risk.rule_state WHERE level > 0
                    ORDER BY station_id, rule_id FOR SHARE"""
            )
            counties = await conn.fetch(
                """SELECT region_code, hazard, level, counts FROM risk.region_level
                    WHERE admin_level = 'county' ORDER BY region_code, hazard FOR SHARE"""
            )
            events = [station_standing(dict(r), now, period) for r in stations]
            events += [county_standing(dict(r), now, period) for r in counties]
            fresh = await conn.fetchval(
                """SELECT count(*) FROM unnest($1::text[]) AS e(id)
                    WHERE NOT EXISTS (SELECT 1 FROM risk.outbox o WHERE o.event_id = e.id)""",
                [e.event_id for e in events],
            )
            await enqueue(
                conn,
                "risk",
                [
                    (e.event_id, topic, e.station_id or e.region_code, e.model_dump(mode="json"))
                    for e in events
                ],
            )
        if fresh:
            ANNOUNCED.labels("station").inc(len(stations))
            ANNOUNCED.labels("region").inc(len(counties))
            self._relay.wake()
        return int(fresh)
