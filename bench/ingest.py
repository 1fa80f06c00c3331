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

import asyncpg
import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.scratch import scratch_database
from services.ingest.app import MIGRATIONS, create_app
from services.ingest.domain.kernel import default as default_kernel
from services.ingest.domain.rows import COLUMNS, Row
from services.ingest.settings import IngestSettings
from services.ingest.workers.consumer import CHUNK, READINGS
from shared.contracts import RawReadingDecoder, Topics
from shared.db import DailyPartitions, create_pool, migrate
from shared.devstack.inprocess import serve
from shared.kafka import FETCH_MAX_WAIT_MS, EventProducer, Received, ensure_topics
from shared.kafka.runner import batch_of

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


def _raw(i: int) -> tuple[bytes, bytes]:
    """The i-th raw reading on ``obs.sensor.v1``: (key, value), in cm (ingest converts to m)."""
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
    return station.encode(), body


async def _load(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        batch = producer.create_batch()
        pending = []
        for i in range(n):
            key, body = _raw(i)
            if batch.append(key=key, value=body, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=i % 3))
                batch = producer.create_batch()
                batch.append(key=key, value=body, timestamp=None)
        pending.append(await producer.send_batch(batch, topic, partition=0))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _consumer_run(dsn: str, bootstrap: str, n: int) -> float:
    prefix = f"bi{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    await ensure_topics(bootstrap, [topics.obs_sensor, topics.readings, topics.readings_dlq])
    await _load(bootstrap, topics.obs_sensor, n)
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
            before = _stored()  # the counter is the process's: earlier rounds counted too
            while time.monotonic() < deadline:
                count = _stored() - before
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


async def _floor(dsn: str, bootstrap: str, n: int) -> dict[str, float]:
    """CPU µs a reading that the client libraries alone cost in this process, each step timed
    by itself on the same n readings with the service's own settings and no checks: fetching
    (aiokafka's records, as the runner takes them), decoding (msgspec, a chunk of messages a
    call, as the service does), the COPY (the kernel's binary stream, sent by asyncpg) and producing
    ready readings.v1 events. Their sum bounds what one consumer process can reach, whatever
    the project does between them."""
    topic = f"bf{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, [topic, f"{topic}.out"])
    await _load(bootstrap, topic, n)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        messages: list[Received] = []
        t = time.process_time()
        while len(messages) < n:
            messages += batch_of(await consumer.getmany(timeout_ms=1000, max_records=20_000))
        fetch = time.process_time() - t
    finally:
        await consumer.stop()

    decoder = RawReadingDecoder()
    values = [m.value for m in messages]
    t = time.process_time()
    decoded = [
        r
        for start in range(0, n, CHUNK)
        for r in decoder.decode_many(values[start : start + CHUNK]) or ()
    ]
    decoding = time.process_time() - t
    assert len(decoded) == n

    rows = [
        Row(r.station_id, r.metric, r.ts, r.value / 100, "m", "good", (), r.source) for r in decoded
    ]
    kernel = default_kernel()
    conn = await asyncpg.connect(dsn)
    try:
        t = time.process_time()
        for start in range(0, n, 20_000):
            payload, _unique = kernel.copy_rows(rows[start : start + 20_000])
            async with conn.transaction():
                await conn.copy_to_table(
                    "readings",
                    schema_name="ingest",
                    columns=COLUMNS,
                    source=memoryview(payload),
                    format="binary",
                )
        copying = time.process_time() - t
    finally:
        await conn.close()

    now = datetime.now(UTC).isoformat()
    events = [
        (
            r.station_id,
            orjson.dumps(
                {
                    "event_id": f"{i:032x}",
                    "produced_at": now,
                    "station_id": r.station_id,
                    "region_code": "110101001001",
                    "station_kind": "water_level",
                    "metric": r.metric,
                    "ts": r.ts,
                    "value": r.value / 100,
                    "unit": "m",
                    "quality": "good",
                    "quality_checks": [],
                    "source": r.source,
                    "kind": "observation",
                    "issued_at": None,
                }
            ),
        )
        for i, r in enumerate(decoded)
    ]
    producer = await EventProducer.start(bootstrap)
    try:
        t = time.process_time()
        for start in range(0, n, 20_000):
            await producer.send_many(f"{topic}.out", events[start : start + 20_000])
        producing = time.process_time() - t
    finally:
        await producer.stop()
    return {
        "fetch_us": fetch / n * 1e6,
        "decode_us": decoding / n * 1e6,
        "copy_us": copying / n * 1e6,
        "produce_us": producing / n * 1e6,
    }


def _stored() -> float:
    """Readings the in-process ingest service has stored so far (its Prometheus counter)."""
    return sum(
        s.value
        for metric in READINGS.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    )


ROUNDS = 3


async def run(admin_dsn: str, bootstrap: str, n: int = 200_000) -> dict[str, float]:
    """``ROUNDS`` rounds, each the baseline then the consumer, one after the other: on a shared
    two-core machine either moves by ±30 % from minute to minute, so each round's ratio is of
    two runs a minute apart, and the median round is the figure."""
    days = n // STATIONS * 5 // 1440 + 1
    rounds: list[tuple[float, float]] = []
    for _ in range(ROUNDS):
        async with scratch_database(admin_dsn) as copy_db:
            await _prepare(copy_db, days)
            copy_rate = n / await _copy_baseline(copy_db, n)
        async with scratch_database(admin_dsn) as consume_db:
            await _prepare(consume_db, days)
            rounds.append((copy_rate, await _consumer_run(consume_db, bootstrap, n)))
    async with scratch_database(admin_dsn) as floor_db:
        await _prepare(floor_db, days)
        floor = await _floor(floor_db, bootstrap, n)
    copy_rate, rate = sorted(rounds, key=lambda r: r[1] / r[0])[len(rounds) // 2]
    floor_us = sum(floor.values())
    print(f"\n## ingest: Kafka → checked → stored, one consumer process ({n:,} readings)")
    print(
        "- rounds (baseline rows/s, consumer rows/s, ratio): "
        + "; ".join(f"{c:,.0f}, {r:,.0f}, {r / c:.2f}×" for c, r in rounds)
    )
    print(f"- baseline (psycopg binary COPY, keyed table), median round: {copy_rate:,.0f} rows/s")
    print(
        f"- ingest consumer (decode, unit conversion, checks, store, publish readings.v1): "
        f"{rate:,.0f} rows/s = {rate / copy_rate:.2f}× baseline; goal ≥ 0.5×"
    )
    print(
        f"- the client libraries alone, no project logic (CPU µs a reading, each step timed by "
        f"itself): fetch {floor['fetch_us']:.2f} + decode {floor['decode_us']:.2f} + COPY "
        f"{floor['copy_us']:.2f} + produce readings.v1 {floor['produce_us']:.2f} = "
        f"{floor_us:.2f} µs: one process doing only these would reach "
        f"{1e6 / floor_us:,.0f} rows/s = {1e6 / floor_us / copy_rate:.2f}× baseline; the "
        f"consumer spends {1e6 / rate:.2f} µs a reading (wall)"
    )
    return {
        "copy_rows_s": copy_rate,
        "consumer_rows_s": rate,
        "floor_us": floor_us,
        "rounds": float(len(rounds)),
        **floor,
    }
