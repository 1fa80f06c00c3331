"""The health sweep: a station is online while its newest observation is no older than
``factor`` × its reporting interval. Every change of state is published on ``stations.health.v1``
inside the transaction that records it: if the publish fails nothing is recorded and the next
sweep tries again; if the commit fails after the publish, the next sweep publishes the same event
id again (consumers de-duplicate). Stations in maintenance are not judged."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import orjson
from prometheus_client import Gauge

from shared.clock import Clock
from shared.contracts import StationHealth, Topics, stable_id
from shared.kafka import EventProducer
from shared.periodic import Periodic

STATIONS = Gauge(
    "qianshao_ingest_stations",
    "Stations judged for health (not in maintenance), per county",
    ["county"],
)
STATIONS_OFFLINE = Gauge(
    "qianshao_ingest_stations_offline",
    "Stations offline at the last health sweep, per county",
    ["county"],
)


class HealthSweep:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: EventProducer,
        topics: Topics,
        clock: Clock,
        *,
        factor: float = 3.0,
        every_s: float = 30.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topics = topics
        self._clock = clock
        self._factor = factor
        self._job = Periodic("health sweep", every_s, self.sweep)

    async def sweep(self) -> list[StationHealth]:
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """WITH judged AS (
                       SELECT h.station_id, s.region_code, s.owner_enterprise, s.interval_s,
                              h.last_seen,
                              h.last_seen >= $1::timestamptz
                                             - make_interval(secs => s.interval_s * $2)
                                  AS now_online
                         FROM ingest.station_health h
                         JOIN ingest.stations s ON s.id = h.station_id
                        WHERE NOT s.maintenance)
                   UPDATE ingest.station_health h
                      SET online = j.now_online, changed_at = $1::timestamptz
                     FROM judged j
                    WHERE h.station_id = j.station_id AND h.online IS DISTINCT FROM j.now_online
                   RETURNING h.station_id, j.region_code, j.owner_enterprise, j.interval_s,
                             h.last_seen, j.now_online""",
                now,
                self._factor,
            )
            events = [
                StationHealth(
                    event_id=stable_id("health", r["station_id"], r["now_online"], r["last_seen"]),
                    produced_at=now,
                    station_id=r["station_id"],
                    region_code=r["region_code"],
                    owner_enterprise=r["owner_enterprise"],
                    online=r["now_online"],
                    last_seen=r["last_seen"],
                    interval_s=r["interval_s"],
                )
                for r in rows
            ]
            if events:
                await self._producer.send_many(
                    self._topics.station_health,
                    [
                        (e.station_id, orjson.dumps(e.model_dump(mode="json")))
                        for e in sorted(events, key=lambda e: e.station_id)
                    ],
                )
            await conn.execute(
                "DELETE FROM ingest.source_minutes WHERE minute < $1", now - timedelta(days=1)
            )
            per_county = await conn.fetch(
                """SELECT left(s.region_code, 6) AS county, count(*) AS n,
                          count(*) FILTER (WHERE h.online IS NOT TRUE) AS offline
                     FROM ingest.stations s
                     LEFT JOIN ingest.station_health h ON h.station_id = s.id
                    WHERE NOT s.maintenance GROUP BY 1"""
            )
        for r in per_county:
            STATIONS.labels(r["county"]).set(r["n"])
            STATIONS_OFFLINE.labels(r["county"]).set(r["offline"])
        return events

    def stop(self) -> None:
        self._job.stop()

    async def run(self) -> None:
        await self._job.run()
