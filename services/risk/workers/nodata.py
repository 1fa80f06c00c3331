"""The no-data sweep: a station silent for more than k × its reporting interval raises its own
event (``kind=no_data``). Its levels stay as they were: silence is never an all-clear. The next
reading clears it (the consumer does that, in the reading's transaction).

Several replicas may sweep at once: each station is re-checked under its row lock and the event id
is derived from the station and its last reading, so the outbox keeps one event.
"""

from __future__ import annotations

import logging

import asyncpg

from services.risk.domain.events import nodata_event
from services.risk.domain.silence import assess_silence
from shared.clock import Clock
from shared.contracts import Topics
from shared.outbox import OutboxRelay, enqueue
from shared.periodic import Periodic

log = logging.getLogger(__name__)


class NoDataSweep:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        relay: OutboxRelay,
        topics: Topics,
        clock: Clock,
        factor: float = 3.0,
        every_s: float = 30.0,
    ) -> None:
        self._pool = pool
        self._relay = relay
        self._topics = topics
        self._clock = clock
        self._factor = factor
        self._job = Periodic("no-data sweep", every_s, self.sweep_once)

    def stop(self) -> None:
        self._job.stop()

    async def run(self) -> None:
        await self._job.run()

    async def sweep_once(self) -> int:
        """One pass; returns the number of events written."""
        now = self._clock.now()
        t = now.timestamp()
        # candidates: overdue and not yet silent (maintenance stations are not judged)
        rows = await self._pool.fetch(
            """SELECT s.station_id FROM risk.station_state s
                 JOIN ingest.stations st ON st.id = s.station_id
                WHERE NOT s.silent AND NOT st.maintenance AND s.last_seen IS NOT NULL
                  AND s.last_seen < $1::timestamptz - make_interval(secs => $2 * st.interval_s)""",
            now,
            self._factor,
        )
        written = 0
        for r in rows:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    """SELECT s.station_id, s.region_code, extract(epoch FROM s.last_seen) AS seen,
                              s.silent, st.interval_s
                         FROM risk.station_state s JOIN ingest.stations st ON st.id = s.station_id
                        WHERE s.station_id = $1 FOR UPDATE OF s""",
                    r["station_id"],
                )
                if row is None:
                    continue
                seen = float(row["seen"]) if row["seen"] is not None else None
                decision = assess_silence(
                    seen, float(row["interval_s"]), self._factor, row["silent"], t
                )
                if decision is not True:
                    continue
                await conn.execute(
                    "UPDATE risk.station_state SET silent = true WHERE station_id = $1",
                    row["station_id"],
                )
                ev = nodata_event(row["station_id"], row["region_code"], seen, True, now)
                await enqueue(
                    conn,
                    "risk",
                    [
                        (
                            ev.event_id,
                            self._topics.risk_events,
                            ev.station_id or "",
                            ev.model_dump(mode="json"),
                        )
                    ],
                )
                written += 1
        if written:
            self._relay.wake()
        return written
