"""Scale-out: the same load consumed by 1, 2 and 4 replicas of ingest and of risk, one consumer
group each, on topics with 4 partitions, keyed by station. Each service is measured alone, and
its load arrives only once every replica holds its partitions (a rebalance during the run would
measure the rebalance). Two rates per replica count:

- ingest: raw readings produced to ``obs.sensor.v1``, stored per second;
- risk (ingest stopped): the ``readings.v1`` ingest published, replayed to a fresh topic, applied
  per second (counted from the offsets risk commits with its state).

Each figure is a ratio to the one-replica run of the same service in the same run. Every replica
is a process, and they share this machine's cores with PostgreSQL and the broker, so the ratio
shows what the machine allows, not what more machines would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.chaos import THRESHOLDS
from bench.scratch import scratch_database, start_service
from shared.contracts import Topics
from shared.devstack.procs import free_port, terminate
from shared.kafka import ensure_topics

REPLICAS = (1, 2, 4)
PARTITIONS = 4
READINGS = 200_000
STATIONS = 2_000


async def _produce(bootstrap: str, topic: str) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        batches: dict[int, object] = {}
        pending = []
        for i in range(READINGS):
            station = f"S{i % STATIONS:04d}"
            body = orjson.dumps(
                {
                    "source": "bench",
                    "station_id": station,
                    "metric": "water_level",
                    "ts": (t0 + timedelta(seconds=i // STATIONS)).isoformat(),
                    "value": 1.0 + (i % 13) / 10,
                    "unit": "m",
                }
            )
            part = hash(station) % PARTITIONS
            batch = batches.get(part) or producer.create_batch()
            if batch.append(key=station.encode(), value=body, timestamp=None) is None:  # type: ignore[attr-defined]
                pending.append(await producer.send_batch(batch, topic, partition=part))  # type: ignore[arg-type]
                batch = producer.create_batch()
                batch.append(key=station.encode(), value=body, timestamp=None)
            batches[part] = batch
        for part, batch in batches.items():
            pending.append(await producer.send_batch(batch, topic, partition=part))  # type: ignore[arg-type]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _rate(conn: asyncpg.Connection, query: str, target: int, *args: object) -> float:
    """Items per second, from the first progress seen to ``target`` reached."""
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        n = int(await conn.fetchval(query, *args) or 0)
        now = time.perf_counter()
        if n and first is None:
            first = (now, n)
        if n >= target and first is not None:
            return (n - first[1]) / max(now - first[0], 1e-3)
        await asyncio.sleep(0.05)
    raise TimeoutError(query)


async def _one(admin_dsn: str, bootstrap: str, replicas: int) -> tuple[float, float]:
    """Each service alone, its replicas holding their partitions before the load arrives:
    ingest on raw readings, then (ingest stopped) risk on the readings ingest published."""
    prefix = f"bs{uuid.uuid4().hex[:6]}."
    risk_prefix = f"br{uuid.uuid4().hex[:6]}."
    topics, risk_topics = Topics(prefix), Topics(risk_prefix)
    await ensure_topics(bootstrap, topics.all(), partitions=PARTITIONS)
    await ensure_topics(bootstrap, risk_topics.all(), partitions=PARTITIONS)
    async with scratch_database(admin_dsn) as dsn:
        procs: list[subprocess.Popen[bytes]] = []
        conn = await asyncpg.connect(dsn)
        try:
            await _start(
                procs,
                "ingest",
                dsn,
                bootstrap,
                prefix,
                replicas,
                STORAGE="native",
                HEALTH_SWEEP_S="0",
            )
            await conn.executemany(
                """INSERT INTO ingest.stations (id, name, kind, region_code, attributes)
                   VALUES ($1, $1, 'water_level', '110101001001', $2::jsonb)""",
                [
                    (f"S{i:04d}", orjson.dumps({"thresholds": THRESHOLDS}).decode())
                    for i in range(STATIONS)
                ],
            )
            # the load arrives once every replica holds its partitions: a rebalance in the
            # middle of the run would stop the group for seconds and measure that
            await _wait_stable(bootstrap, f"{prefix}ingest", replicas)
            producing = asyncio.create_task(_produce(bootstrap, topics.obs_sensor))
            stored = await _rate(conn, "SELECT count(*) FROM ingest.readings", READINGS)
            await producing
            published = await _read_all(bootstrap, topics.readings, READINGS)
            for p in procs:
                terminate(p)
            procs.clear()
            await _start(procs, "risk", dsn, bootstrap, risk_prefix, replicas, NODATA_SWEEP_S="0")
            await _wait_stable(bootstrap, f"{risk_prefix}risk", replicas)
            replaying = asyncio.create_task(_replay(bootstrap, risk_topics.readings, published))
            applied = await _rate(
                conn,
                """SELECT sum("offset" + 1) FROM risk.applied_offsets WHERE topic = $1""",
                READINGS,
                risk_topics.readings,
            )
            await replaying
            return stored, applied
        finally:
            await conn.close()
            for p in procs:
                terminate(p)


async def _start(
    procs: list[subprocess.Popen[bytes]],
    service: str,
    dsn: str,
    bootstrap: str,
    prefix: str,
    replicas: int,
    **extra: str,
) -> None:
    """``replicas`` processes of the service in one consumer group; the first alone until its
    migrations have made the schema."""
    env = {
        "DATABASE_URL": dsn,
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOPIC_PREFIX": prefix,
        "LOG_LEVEL": "ERROR",
        "CONSUMER_GROUP": f"{prefix}{service}",
        **extra,
    }
    p = f"QIANSHAO_{service.upper()}_"
    for r in range(replicas):
        procs.append(
            start_service(
                service, {p + k: v for k, v in env.items()} | {p + "PORT": str(free_port())}
            )
        )
        if r == 0:
            await _wait_schema(dsn, service)


async def _read_all(bootstrap: str, topic: str, n: int) -> dict[int, list[tuple[bytes, bytes]]]:
    """The first ``n`` messages of the topic, (key, value) by partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        out: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
        got = 0
        deadline = time.monotonic() + 120
        while got < n and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition] += [(r.key, r.value) for r in records]
                got += len(records)
        if got < n:
            raise TimeoutError(f"{got} of {n} messages on {topic}")
        return out
    finally:
        await consumer.stop()


async def _replay(
    bootstrap: str, topic: str, messages: dict[int, list[tuple[bytes, bytes]]]
) -> None:
    """The messages to the same partitions of another topic (so each station keeps its order)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for part, items in messages.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=part))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            pending.append(await producer.send_batch(batch, topic, partition=part))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _wait_stable(bootstrap: str, group: str, members: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            # (error, group, state, protocol type, protocol, members)
            described = (await admin.describe_consumer_groups([group]))[0].groups[0]
            if described[2] == "Stable" and len(described[5]) == members:
                return
        except KafkaError:
            pass  # the broker drops the connection when asked about a group not formed yet
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"consumer group {group} did not settle with {members} members")


async def _wait_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(600):
            if await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", schema
            ):
                await asyncio.sleep(1)  # its migrations commit as one transaction
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise TimeoutError(f"{schema} schema")


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    out: dict[str, float] = {}
    print(
        f"\n## Scale-out ({READINGS:,} readings on {PARTITIONS} partitions, {os.cpu_count()} cores)"
    )
    print("| replicas | ingest readings/s | ratio to 1 | risk readings/s | ratio to 1 |")
    print("|---|---|---|---|---|")
    for n in REPLICAS:
        stored, applied = await _one(admin_dsn, bootstrap, n)
        out[f"{n}: ingest"] = stored
        out[f"{n}: risk"] = applied
        print(
            f"| {n} | {stored:,.0f} | {stored / out['1: ingest']:.2f}× | {applied:,.0f} | "
            f"{applied / out['1: risk']:.2f}× |"
        )
    return out
