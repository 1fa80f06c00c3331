"""Hourly and daily roll-ups and retention, on both storage paths.

- **TimescaleDB**: ``ingest.readings_1h`` / ``readings_1d`` are continuous aggregates (migration
  ``0003``) refreshed by policies, which also compress chunks after 7 days and drop old ones.
  :meth:`Housekeeping.configure` sets the retention periods from the settings.
- **Plain PostgreSQL**: the same two relations are tables. A statement trigger on
  ``ingest.readings`` (migration ``0007``) marks the (metric, hour) pairs each insert touched in
  ``ingest.rollup_stale``, inside the writer's transaction; :meth:`Housekeeping.refresh` takes
  marked pairs (``SKIP LOCKED``: replicas share the work), recomputes each hour for every station
  from the raw rows and each touched day from its hours, and removes the marks in the same
  transaction. Late data therefore re-aggregates exactly the buckets it fell
  into. Retention drops whole daily partitions of raw data and deletes roll-up rows.

Buckets are ``time_bucket`` buckets on both paths: an hour holds ``[h, h + 1 h)``; a day is a
Beijing calendar day.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg

from shared.clock import Clock
from shared.db import DailyPartitions, StorageMode, ident
from shared.periodic import Periodic

log = logging.getLogger(__name__)

ROLLUPS = ("ingest.readings_1h", "ingest.readings_1d")


class Housekeeping:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        storage: StorageMode,
        clock: Clock,
        raw_retention_days: int = 180,
        rollup_retention_days: int = 3650,
        refresh_every_s: float = 30.0,
        current_hour_every_s: float = 300.0,
        batch: int = 24,
    ) -> None:
        self._pool = pool
        self._storage = storage
        self._clock = clock
        self._raw_days = raw_retention_days
        self._rollup_days = rollup_retention_days
        self._batch = batch
        self._current_every = timedelta(seconds=current_hour_every_s)
        self._current_at: datetime | None = None
        self._last_expiry: datetime | None = None
        self._job = Periodic("roll-up refresh", refresh_every_s, self.tick)

    async def configure(self) -> None:
        """TimescaleDB: align the retention policies with the settings (idempotent)."""
        if self._storage != "timescale":
            return
        async with self._pool.acquire() as conn, conn.transaction():
            # the extension's functions, named with its schema (whatever the search_path is)
            ext = ident(
                await conn.fetchval(
                    """SELECT extnamespace::regnamespace::text FROM pg_extension
                        WHERE extname = 'timescaledb'"""
                )
            )
            periods = [("ingest.readings", self._raw_days)]
            periods += [(r, self._rollup_days) for r in ROLLUPS]
            for rel, days in periods:
                await conn.execute(
                    f"SELECT {ext}.remove_retention_policy($1::regclass, if_exists => true)", rel
                )
                await conn.execute(
                    f"SELECT {ext}.add_retention_policy($1::regclass, $2::interval)",
                    rel,
                    timedelta(days=days),
                )

    async def refresh(self) -> int:
        """Plain PostgreSQL: recompute the marked buckets; how many hours were recomputed.

        The hour still filling (and any later one) is taken at most every
        ``current_hour_every_s``: each of its refreshes reads every row of the hour, which at
        10 k readings/s is millions of rows; hours that are over are taken every time."""
        if self._storage != "native":
            return 0
        now = self._clock.now()
        current = now.replace(minute=0, second=0, microsecond=0)
        with_current = self._current_at is None or now - self._current_at >= self._current_every
        total = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                marked = await conn.fetch(
                    """DELETE FROM ingest.rollup_stale d
                        USING (SELECT metric, hour FROM ingest.rollup_stale
                                WHERE hour < $2 OR $3
                                ORDER BY hour LIMIT $1 FOR UPDATE SKIP LOCKED) x
                        WHERE d.metric = x.metric AND d.hour = x.hour
                    RETURNING d.metric, d.hour""",
                    self._batch,
                    current,
                    with_current,
                )
                if not marked:
                    break
                arrays = ([m["metric"] for m in marked], [m["hour"] for m in marked])
                await conn.execute(_UPSERT_HOURS, *arrays)
                await conn.execute(_UPSERT_DAYS, *arrays)
            total += len(marked)
        if with_current:
            self._current_at = now
        return total

    async def expire(self) -> list[str]:
        """Plain PostgreSQL: drop raw partitions and roll-up rows past retention."""
        if self._storage != "native":
            return []
        now = self._clock.now()
        async with self._pool.acquire() as conn:
            dropped = await DailyPartitions("ingest.readings").drop_before(
                conn, (now - timedelta(days=self._raw_days)).date()
            )
            for rel in ROLLUPS:
                await conn.execute(
                    f"DELETE FROM {rel} WHERE bucket < $1",  # noqa: S608 - a constant name
                    now - timedelta(days=self._rollup_days),
                )
        return dropped

    async def tick(self) -> None:
        """Refresh the roll-ups; once an hour, expire what is past retention."""
        await self.refresh()
        now = self._clock.now()
        if self._last_expiry is None or now - self._last_expiry >= timedelta(hours=1):
            await self.expire()
            self._last_expiry = now

    def stop(self) -> None:
        self._job.stop()

    async def run(self) -> None:
        await self._job.run()


# The marked (metric, hour) pairs are passed as two arrays. Each hour is recomputed for every
# station with raw rows in it, and each Beijing day touched from its hours. Upserts, not delete and
# insert: a station whose raw rows of that hour are gone (past retention) keeps its roll-up, and a
# bucket never loses rows (a stored reading is never removed or re-graded).
_UPSERT_HOURS = """INSERT INTO ingest.readings_1h
                       (station_id, metric, bucket, min, max, avg, sum, count)
                   SELECT r.station_id, d.m, d.h, min(r.value), max(r.value), avg(r.value),
                          sum(r.value), count(*)
                     FROM unnest($1::text[], $2::timestamptz[]) AS d(m, h)
                     JOIN ingest.readings r
                       ON r.metric = d.m AND r.ts >= d.h AND r.ts < d.h + interval '1 hour'
                    WHERE r.quality < 2
                    GROUP BY r.station_id, d.m, d.h
                   ON CONFLICT (station_id, metric, bucket) DO UPDATE
                      SET min = EXCLUDED.min, max = EXCLUDED.max, avg = EXCLUDED.avg,
                          sum = EXCLUDED.sum, count = EXCLUDED.count"""
_UPSERT_DAYS = """INSERT INTO ingest.readings_1d
                      (station_id, metric, bucket, min, max, avg, sum, count)
                  SELECT h.station_id, x.m, x.day, min(h.min), max(h.max),
                         sum(h.sum) / sum(h.count), sum(h.sum), sum(h.count)
                    FROM (SELECT DISTINCT d.m, date_trunc('day', d.h, 'Asia/Shanghai') AS day
                           FROM unnest($1::text[], $2::timestamptz[]) AS d(m, h)) x
                    JOIN ingest.readings_1h h
                      ON h.metric = x.m AND h.bucket >= x.day
                     AND h.bucket < x.day + interval '1 day'
                   GROUP BY h.station_id, x.m, x.day
                  ON CONFLICT (station_id, metric, bucket) DO UPDATE
                     SET min = EXCLUDED.min, max = EXCLUDED.max, avg = EXCLUDED.avg,
                         sum = EXCLUDED.sum, count = EXCLUDED.count"""
