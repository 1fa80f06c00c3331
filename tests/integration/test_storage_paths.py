"""The storage suite, run twice: on plain PostgreSQL (native partitions, roll-up tables the project
maintains) and on TimescaleDB (hypertable, compression, continuous aggregates, retention
policies), the release in vendor/timescaledb built into Debian's PostgreSQL and preloaded, its
background jobs running as they do in production.

Each case checks the same behaviour on both paths: readings stored once per (station, metric, ts)
with conflicts recorded, hourly and daily (Beijing) roll-ups equal to what the raw rows give,
late data re-aggregating the buckets it falls into, and retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.ingest.adapters.series import latest as latest_values
from services.ingest.adapters.series import parse_bucket, series
from services.ingest.adapters.store import ReadingStore
from services.ingest.app import MIGRATIONS
from services.ingest.domain.rows import Row
from services.ingest.workers.housekeeping import Housekeeping
from shared.clock import ManualClock
from shared.db import StorageMode, create_pool, migrate

BEIJING = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 7, 20, 12, tzinfo=UTC)


@dataclass
class Storage:
    mode: StorageMode
    pool: asyncpg.Pool
    store: ReadingStore
    housekeeping: Housekeeping

    async def refresh(self) -> None:
        """Bring the roll-ups up to date: the project's refresh, or a refresh of the continuous
        aggregates over all time (their policies refresh the last 30 days before the real now,
        and the test data are older)."""
        if self.mode == "native":
            await self.housekeeping.refresh()
            return
        for view in ("ingest.readings_1h", "ingest.readings_1d"):
            await self.pool.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")

    async def jobs(self, proc: str) -> list[int]:
        rows = await self.pool.fetch(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = $1 ORDER BY 1",
            proc,
        )
        return [r["job_id"] for r in rows]


@pytest.fixture(params=["native", "timescale"])
async def storage(request, database) -> AsyncIterator[Storage]:
    pool = await create_pool(database, min_size=1, max_size=4)
    try:
        mode = await migrate(pool, "ingest", MIGRATIONS, storage=request.param)
        assert mode == request.param
        hk = Housekeeping(
            pool,
            storage=mode,
            clock=ManualClock(NOW),
            raw_retention_days=30,
            rollup_retention_days=400,
        )
        await hk.configure()
        if mode == "timescale":
            await pause_jobs(pool)
        yield Storage(mode, pool, ReadingStore(pool, storage=mode), hk)
    finally:
        await pool.close()


async def pause_jobs(pool: asyncpg.Pool) -> None:
    """The policies' background jobs judge by the real clock, and the tests' data are months
    old: held until a test runs them, so that none drops or compresses what another test is
    looking at. Returns once none is running (one may have started on the empty tables)."""
    await pool.execute(
        """SELECT (alter_job(job_id, scheduled => false)).job_id
             FROM timescaledb_information.jobs WHERE proc_name LIKE 'policy_%'"""
    )
    for _ in range(100):
        running = await pool.fetchval(
            "SELECT count(*) FROM timescaledb_information.job_stats WHERE job_status = 'Running'"
        )
        if not running:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("a policy job did not finish")


def rows(start: datetime, n: int, step: timedelta, value, metric="rainfall", station="S1"):
    return [
        Row(station, metric, start + i * step, value(i), "mm", "good", (), "src") for i in range(n)
    ]


def expected(rs: list[Row], bucket) -> dict[tuple[str, str, datetime], tuple]:
    groups: dict[tuple[str, str, datetime], list[float]] = {}
    for r in rs:
        if r.quality == "bad":
            continue
        groups.setdefault((r.station_id, r.metric, bucket(r.ts)), []).append(r.value)
    return {
        k: (min(v), max(v), pytest.approx(sum(v) / len(v)), pytest.approx(sum(v)), len(v))
        for k, v in groups.items()
    }


def hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def beijing_day(ts: datetime) -> datetime:
    local = ts.astimezone(BEIJING)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


async def rollup(st: Storage, rel: str) -> dict[tuple[str, str, datetime], tuple]:
    got = await st.pool.fetch(
        f"SELECT station_id, metric, bucket, min, max, avg, sum, count FROM {rel}"  # noqa: S608
    )
    return {
        (r["station_id"], r["metric"], r["bucket"].astimezone(UTC)): (
            r["min"],
            r["max"],
            r["avg"],
            r["sum"],
            r["count"],
        )
        for r in got
    }


async def test_readings_are_stored_once_and_roll_up_by_hour_and_beijing_day(storage):
    st = storage
    # 5-minute readings from 14:00 UTC (22:00 in Beijing) for 4 hours: two Beijing days
    start = datetime(2026, 7, 18, 14, tzinfo=UTC)
    data = rows(start, 48, timedelta(minutes=5), lambda i: float(i % 7))
    data[5] = Row("S1", "rainfall", data[5].ts, 99.0, "mm", "bad", ("hard_range",), "src")
    data += rows(start, 12, timedelta(minutes=20), lambda i: 2.5 + i, metric="water_level")
    first = await st.store.write(data)
    assert len(first.stored) == len(data)
    again = await st.store.write(
        [*data[:3], Row("S1", "rainfall", start, 42.0, "mm", "good", (), "x")]
    )
    assert len(again.stored) == 3  # a repeat with the same value is harmless
    assert [(r.value, kept) for r, kept in again.conflicts] == [(42.0, 0.0)]
    assert await st.pool.fetchval("SELECT count(*) FROM ingest.readings") == len(data)
    assert await st.pool.fetchval("SELECT count(*) FROM ingest.reading_conflicts") == 1

    await st.refresh()
    assert await rollup(st, "ingest.readings_1h") == expected(data, hour)
    days = expected(data, beijing_day)
    assert len({k[2] for k in days}) == 2
    assert await rollup(st, "ingest.readings_1d") == days

    # late data: two readings into the first hour, one of them on a new minute
    late = [
        Row("S1", "rainfall", start + timedelta(minutes=2), 30.0, "mm", "good", (), "late"),
        Row("S1", "rainfall", start + timedelta(minutes=7), 1.0, "mm", "good", (), "late"),
    ]
    await st.store.write(late)
    await st.refresh()
    assert await rollup(st, "ingest.readings_1h") == expected(data + late, hour)
    assert await rollup(st, "ingest.readings_1d") == expected(data + late, beijing_day)


async def test_native_marks_come_from_the_database_and_spare_hours_past_retention(storage):
    st = storage
    if st.mode != "native":
        pytest.skip("continuous aggregates track late data themselves")
    hour0 = datetime(2026, 7, 18, 3, tzinfo=UTC)
    await st.store.write(rows(hour0, 6, timedelta(minutes=10), lambda i: 1.0, station="S1"))
    # any writer marks what it inserted, not only the store: here a plain INSERT
    await st.pool.execute(
        """INSERT INTO ingest.readings (station_id, metric, ts, value, unit, source)
           VALUES ('S2', 'rainfall', $1, 4.0, 'mm', 'sql')""",
        hour0 + timedelta(minutes=5),
    )
    marks = await st.pool.fetch("SELECT metric, hour FROM ingest.rollup_stale")
    assert [(m["metric"], m["hour"]) for m in marks] == [("rainfall", hour0)]
    await st.refresh()
    got = await rollup(st, "ingest.readings_1h")
    assert got[("S1", "rainfall", hour0)][4] == 6
    assert got[("S2", "rainfall", hour0)] == (4.0, 4.0, 4.0, 4.0, 1)
    assert await st.pool.fetchval("SELECT count(*) FROM ingest.rollup_stale") == 0

    # in an hour past raw retention (its raw rows dropped, its roll-up made while they lived), a
    # late reading of another station adds that station's roll-up and leaves the others alone
    old = datetime(2026, 5, 1, 6, tzinfo=UTC)
    await st.pool.execute(
        """INSERT INTO ingest.readings_1h (station_id, metric, bucket, min, max, avg, sum, count)
           VALUES ('S1', 'rainfall', $1, 2, 2, 2, 12, 6)""",
        old,
    )
    late = rows(old + timedelta(minutes=1), 1, timedelta(0), lambda i: 9.0, station="S3")
    await st.store.write(late)
    await st.refresh()
    got = await rollup(st, "ingest.readings_1h")
    assert got[("S1", "rainfall", old)] == (2.0, 2.0, 2.0, 12.0, 6)
    assert got[("S3", "rainfall", old)] == (9.0, 9.0, 9.0, 9.0, 1)
    assert await st.pool.fetchval("SELECT count(*) FROM ingest.rollup_stale") == 0


async def test_native_refreshes_the_hour_still_filling_at_most_every_few_minutes(storage):
    """Each refresh of an hour reads all its rows: the hour still filling is taken at most every
    five minutes, a finished hour (late data) at every refresh."""
    st = storage
    if st.mode != "native":
        pytest.skip("continuous aggregates have their own refresh policy")
    clock = ManualClock(NOW + timedelta(minutes=20))  # the hour still filling is 12:00
    hk = Housekeeping(st.pool, storage="native", clock=clock, current_hour_every_s=300)
    await st.store.write(rows(NOW, 4, timedelta(minutes=5), lambda i: 1.0))
    await st.store.write(rows(NOW - timedelta(hours=1), 2, timedelta(minutes=5), lambda i: 2.0))
    assert await hk.refresh() == 2  # the first refresh takes every hour
    got = await rollup(st, "ingest.readings_1h")
    assert got[("S1", "rainfall", NOW)][4] == 4

    await st.store.write(rows(NOW + timedelta(minutes=20), 2, timedelta(minutes=1), lambda i: 3.0))
    late = NOW - timedelta(hours=2) + timedelta(minutes=30)
    await st.store.write(rows(late, 1, timedelta(0), lambda i: 5.0))
    clock.advance(60)
    assert await hk.refresh() == 1  # the late hour at once; the current one waits
    got = await rollup(st, "ingest.readings_1h")
    assert got[("S1", "rainfall", NOW - timedelta(hours=2))] == (5.0, 5.0, 5.0, 5.0, 1)
    assert got[("S1", "rainfall", NOW)][4] == 4
    clock.advance(240)
    assert await hk.refresh() == 1
    got = await rollup(st, "ingest.readings_1h")
    assert got[("S1", "rainfall", NOW)] == (1.0, 3.0, pytest.approx(10 / 6), 10.0, 6)


async def test_retention_and_compression(storage):
    st = storage
    old = datetime(2026, 5, 1, tzinfo=UTC)  # older than the 30 days of raw retention
    recent = NOW - timedelta(days=10)  # older than 7 days: compressed on TimescaleDB
    await st.store.write(rows(old, 24, timedelta(hours=1), lambda i: 1.0))
    await st.store.write(rows(recent, 24, timedelta(hours=1), lambda i: 2.0))
    await st.refresh()
    before_days = await rollup(st, "ingest.readings_1d")
    assert len(before_days) == 4  # two Beijing days each
    if st.mode == "native":
        dropped = await st.housekeeping.expire()
        assert dropped
        assert all(d < "ingest.readings_p20260620" for d in dropped)
    else:
        (config,) = await st.pool.fetch(
            """SELECT config FROM timescaledb_information.jobs
                WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'"""
        )
        assert "30 days" in str(config["config"])
        for job in await st.jobs("policy_compression"):
            await st.pool.execute(f"CALL run_job({int(job)})")
        compressed = await st.pool.fetchval(
            """SELECT count(*) FROM timescaledb_information.chunks
                WHERE hypertable_name = 'readings' AND is_compressed"""
        )
        assert compressed >= 1
        # a late reading into a compressed chunk is still stored once
        late = Row("S1", "rainfall", recent + timedelta(minutes=30), 5.0, "mm", "good", (), "x")
        assert len((await st.store.write([late, late])).stored) == 1
        await st.pool.execute(
            "SELECT drop_chunks('ingest.readings', older_than => $1::timestamptz)",
            NOW - timedelta(days=30),
        )
    # raw data past retention is gone, the roll-ups stay
    left = await st.pool.fetch("SELECT DISTINCT value FROM ingest.readings ORDER BY 1")
    assert [r["value"] for r in left] in ([2.0], [2.0, 5.0])
    assert (await rollup(st, "ingest.readings_1d")).keys() == before_days.keys()


async def test_series_from_raw_and_from_rollups_agree(storage):
    st = storage
    start = datetime(2026, 7, 18, 16, tzinfo=UTC)  # Beijing midnight, 19 July
    data = rows(start, 12 * 48, timedelta(minutes=5), lambda i: float((i * 7) % 11))
    data[3] = Row("S1", "rainfall", data[3].ts, 500.0, "mm", "bad", ("hard_range",), "src")
    await st.store.write(data)
    await st.refresh()
    good = [r for r in data if r.quality != "bad"]
    end = start + timedelta(days=2)

    def want(step: timedelta, agg):
        groups: dict[datetime, list[float]] = {}
        for r in good:
            groups.setdefault(start + (r.ts - start) // step * step, []).append(r.value)
        return [(t, pytest.approx(agg(v))) for t, v in sorted(groups.items())]

    async def got(bucket: str, agg: str):
        src, points = await series(
            st.pool,
            station_id="S1",
            metric="rainfall",
            start=start,
            end=end,
            bucket=parse_bucket(bucket),
            agg=agg,
        )
        return src, [(p.ts.astimezone(UTC), p.value) for p in points]

    assert await got("30min", "sum") == ("raw", want(timedelta(minutes=30), sum))
    assert await got("3h", "sum") == ("1h", want(timedelta(hours=3), sum))
    assert await got("3h", "max") == ("1h", want(timedelta(hours=3), max))
    assert await got("1d", "avg") == ("1d", want(timedelta(days=1), lambda v: sum(v) / len(v)))
    assert await got("1d", "count") == ("1d", want(timedelta(days=1), len))
    src, raw = await got("raw", "avg")
    assert src == "raw"
    assert len(raw) == len(data)  # the raw series shows the bad reading too
    (latest,) = await latest_values(st.pool, "S1")
    assert (latest.ts.astimezone(UTC), latest.value) == (data[-1].ts, data[-1].value)


@pytest.mark.parametrize("kernel_name", ["native", "python"])
async def test_every_shape_of_row_round_trips_through_the_copy(storage, kernel_name):
    """The COPY stream made by either kernel stores exactly the rows it was made from: text
    arrays empty and not, every quality code, offsets and microseconds, odd floats, non-ASCII."""
    from services.ingest.domain import kernel

    k = kernel.default(use_native=kernel_name == "native")
    assert k is not None, "the compiled kernel is not built"
    store = ReadingStore(storage.pool, storage=storage.mode, kernel=k)
    shanghai = datetime(2026, 7, 10, 8, 30, 0, 123_456, tzinfo=BEIJING)
    made = [
        Row("站点-1", "water_level", shanghai, -0.0, "m", "good", (), "省平台"),
        Row("S2", "rainfall", NOW - timedelta(days=3), 5e-324, "mm", "doubtful", ("spike",), "s"),
        Row("S2", "temperature", NOW, -12.5, "degC", "bad", ("stuck", "维护"), "s"),
        Row("S3", "ch4", NOW + timedelta(microseconds=1), 1e16, "%", "good", ("a,b", ""), "s"),
    ]
    result = await store.write(made)
    assert result.stored == made
    assert result.conflicts == []
    got = await storage.pool.fetch(
        """SELECT station_id, metric, ts, value, unit, quality, checks, source
             FROM ingest.readings ORDER BY station_id COLLATE "C", metric"""
    )
    code = {"good": 0, "doubtful": 1, "bad": 2}
    assert [tuple(r.values()) for r in got] == [
        (r.station_id, r.metric, r.ts, r.value, r.unit, code[r.quality], list(r.checks), r.source)
        for r in sorted(made, key=lambda r: (r.station_id, r.metric))
    ]
    again = await store.write([*made, made[2]._replace(value=3.0)])  # repeats and a conflict
    assert again.stored == made
    assert [(r.value, kept) for r, kept in again.conflicts] == [(3.0, -12.5)]


async def test_the_policies_run_by_themselves_as_scheduled_jobs(storage):
    """TimescaleDB's background workers run the policies on their schedule, as in production:
    each job brought forward to now runs by itself — the compression of chunks older than
    7 days, the retention of raw data (30 days here), the refresh of the continuous aggregates —
    and each does what it is for."""
    st = storage
    if st.mode != "timescale":
        pytest.skip("native storage has no background jobs: housekeeping does their work")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await st.store.write(rows(now - timedelta(days=40), 6, timedelta(hours=1), lambda i: 1.0))
    await st.store.write(rows(now - timedelta(days=10), 6, timedelta(hours=1), lambda i: 2.0))
    await st.store.write(rows(now - timedelta(hours=3), 6, timedelta(minutes=10), lambda i: 3.0))
    jobs = {
        proc: await st.jobs(proc)
        for proc in (
            "policy_compression",
            "policy_retention",
            "policy_refresh_continuous_aggregate",
        )
    }
    assert all(jobs.values()), jobs
    every = [j for ids in jobs.values() for j in ids]
    for job in every:  # held by the fixture: now on their schedule, the first run due now
        await st.pool.execute(
            "SELECT (alter_job($1, scheduled => true, next_start => now())).job_id", job
        )

    async def ran() -> bool:
        done = await st.pool.fetchval(
            """SELECT count(*) FROM timescaledb_information.job_stats
                WHERE job_id = ANY($1::int[]) AND total_successes > 0""",
            every,
        )
        return bool(done == len(every))

    async def failed() -> list[int]:
        rows = await st.pool.fetch(
            """SELECT job_id FROM timescaledb_information.job_stats
                WHERE job_id = ANY($1::int[]) AND total_successes = 0
                  AND last_run_status = 'Failed' AND job_status = 'Scheduled'
                  AND next_start > now()""",
            every,
        )
        return [r["job_id"] for r in rows]

    # the jobs all start at once here, as they seldom do in production: one may lose to another
    # (a lock it waited for): the scheduler retries a failed job after a backoff, which the test
    # brings forward, three times at most, and says why each failed
    retried: dict[int, int] = {}
    deadline = asyncio.get_running_loop().time() + 90
    while not await ran():
        assert asyncio.get_running_loop().time() < deadline, await st.pool.fetch(
            """SELECT s.job_id, s.last_run_status, s.total_failures,
                      (SELECT array_agg(e.err_message) FROM timescaledb_information.job_errors e
                        WHERE e.job_id = s.job_id) AS errors
                 FROM timescaledb_information.job_stats s WHERE s.job_id = ANY($1::int[])""",
            every,
        )
        for job in await failed():
            retried[job] = retried.get(job, 0) + 1
            assert retried[job] <= 3, await st.pool.fetch(
                "SELECT err_message FROM timescaledb_information.job_errors WHERE job_id = $1",
                job,
            )
            await st.pool.execute("SELECT (alter_job($1, next_start => now())).job_id", job)
        await asyncio.sleep(0.5)
    compressed = await st.pool.fetchval(
        """SELECT count(*) FROM timescaledb_information.chunks
            WHERE hypertable_name = 'readings' AND is_compressed"""
    )
    assert compressed >= 1  # the chunk 10 days old
    values = [r["value"] for r in await st.pool.fetch(
        "SELECT DISTINCT value FROM ingest.readings ORDER BY 1"
    )]  # fmt: skip
    assert values == [2.0, 3.0]  # 40 days old: gone
    materialised = await st.pool.fetchval(
        """SELECT count(*) FROM timescaledb_information.continuous_aggregates c
             JOIN timescaledb_information.chunks k
               ON k.hypertable_schema = c.materialization_hypertable_schema
              AND k.hypertable_name = c.materialization_hypertable_name
            WHERE c.view_name = 'readings_1h'"""
    )
    assert materialised >= 1  # the refresh wrote the last hours' buckets
