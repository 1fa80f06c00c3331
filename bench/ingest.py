"""Ingest benchmark: Kafka → decoded, checked, normalised → stored (and published on readings.v1),
with one consumer process, against a raw keyed binary COPY of the same rows into the same table.

Baseline in the same run: psycopg's binary COPY of pre-built rows into ``ingest.readings``
(native daily partitions, the (station, metric, ts) key) — the least any writer must pay. The
ingest service then consumes the same number of raw readings pre-loaded on ``obs.sensor.v1``; its
rate is taken from the first stored row to the last (the consumer group's join is not counted).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from bench.scratch import scratch_database
from services.ingest.app import MIGRATIONS, create_app
from services.ingest.consumer import READINGS
from services.ingest.settings import IngestSettings
from shared.contracts import Topics
from shared.db import DailyPartitions, create_pool, migrate
from shared.devstack.inprocess import serve
from shared.kafka import ensure_topics

T0 = datetime(2026, 7, 1, tzinfo=UTC)
STATIONS = 2000


async def _prepare(dsn: str, days: int) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        await migrate(pool, "ingest", MIGRATIONS, storage="native")
        await pool.executemany(
            """INSERT INTO ingest.stations (id, name, kind, region_code, interval_s)
               VALUES ($1, $1, 'water_level', '110101001001', 300)""",
            [(f"B{i:04d}",) for i in range(STATIONS)],
        )
        async with pool.acquire() as conn:
            await DailyPartitions("ingest.readings").ensure(
                conn, {date(2026, 7, 1) + timedelta(days=d) for d in range(days + 1)}
            )
    finally:
        await pool.close()


def _point(i: int) -> tuple[str, datetime, float]:
    return f"B{i % STATIONS:04d}", T0 + timedelta(minutes=5 * (i // STATIONS)), 2.0 + (i % 7) / 100


async def _copy_baseline(dsn: str, n: int) -> float:
    rows = [(s, "water_level", ts, v, "m", 0, [], "bench") for s, ts, v in map(_point, range(n))]
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        t = time.perf_counter()
        async with conn.cursor() as cur:
            for start in range(0, n, 10_000):
                async with cur.copy(
                    """COPY ingest.readings
                           (station_id, metric, ts, value, unit, quality, checks, source)
                       FROM STDIN (FORMAT BINARY)"""
                ) as copy:
                    copy.set_types(
                        ["text", "text", "timestamptz", "float8", "text", "int2", "text[]", "text"]
                    )
                    for row in rows[start : start + 10_000]:
                        await copy.write_row(row)
        await conn.commit()
        return time.perf_counter() - t


async def _consumer_run(dsn: str, bootstrap: str, n: int) -> float:
    prefix = f"bi{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    await ensure_topics(bootstrap, [topics.obs_sensor, topics.readings, topics.readings_dlq])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        batch = producer.create_batch()
        pending = []
        for i in range(n):
            station, ts, value = _point(i)
            body = orjson.dumps(
                {
                    "source": "bench",
                    "station_id": station,
                    "metric": "water_level",
                    "ts": ts.isoformat(),
                    "value": value * 100,
                    "unit": "cm",
                }
            )
            if batch.append(key=station.encode(), value=body, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topics.obs_sensor, partition=i % 3))
                batch = producer.create_batch()
                batch.append(key=station.encode(), value=body, timestamp=None)
        pending.append(await producer.send_batch(batch, topics.obs_sensor, partition=0))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    settings = IngestSettings(
        database_url=dsn,
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        consumer_group=f"{prefix}ingest",
        storage="native",
        log_level="WARNING",
        health_sweep_s=0,
    )
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with serve(create_app(settings)):
            # progress from the service's own counter (it runs in this process): polling
            # count(*) on the growing table would take database time from the writer
            first = last = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                count = _stored()
                now = time.perf_counter()
                if count and first is None:
                    first = (now, count)
                if count >= n:
                    last = (now, count)
                    break
                await asyncio.sleep(0.01)
            if first is None or last is None:
                raise RuntimeError("the consumer did not store every reading in time")
            stored = await pool.fetchval("SELECT count(*) FROM ingest.readings")
            if stored != n:
                raise RuntimeError(f"{stored} rows stored for {n} readings")
            return (last[1] - first[1]) / (last[0] - first[0])
    finally:
        await pool.close()


def _stored() -> float:
    """Readings the in-process ingest service has stored so far (its Prometheus counter)."""
    return sum(
        s.value
        for metric in READINGS.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    )


async def run(admin_dsn: str, bootstrap: str, n: int = 200_000) -> dict[str, float]:
    days = n // STATIONS * 5 // 1440 + 1
    async with scratch_database(admin_dsn) as copy_db:
        await _prepare(copy_db, days)
        copy_s = await _copy_baseline(copy_db, n)
    async with scratch_database(admin_dsn) as consume_db:
        await _prepare(consume_db, days)
        rate = await _consumer_run(consume_db, bootstrap, n)
    copy_rate = n / copy_s
    print(f"\n## ingest: Kafka → checked → stored, one consumer process ({n:,} readings)")
    print(f"- baseline (psycopg binary COPY, keyed table): {copy_rate:,.0f} rows/s")
    print(
        f"- ingest consumer (decode, unit conversion, checks, store, publish readings.v1): "
        f"{rate:,.0f} rows/s = {rate / copy_rate:.2f}× baseline; goal ≥ 0.5×"
    )
    return {"copy_rows_s": copy_rate, "consumer_rows_s": rate}
