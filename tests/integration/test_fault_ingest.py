"""Fault injection: ingest killed with SIGKILL twice while it consumes a steady push. Every reading
answered 202 is stored exactly once and published on readings.v1."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from shared.devstack.procs import free_port
from tests.helpers import eventually, identity_header
from tests.kafka_util import read_all
from tests.procs import start_service, stop, wait_ready


async def test_sigkill_of_ingest_loses_and_doubles_nothing(database, broker, topic_prefix):
    port = free_port()
    env = {
        **os.environ,
        "QIANSHAO_INGEST_DATABASE_URL": database,
        "QIANSHAO_INGEST_KAFKA_BOOTSTRAP": broker.bootstrap,
        "QIANSHAO_INGEST_TOPIC_PREFIX": topic_prefix,
        "QIANSHAO_INGEST_CONSUMER_GROUP": f"{topic_prefix}ingest",
        "QIANSHAO_INGEST_PORT": str(port),
        "QIANSHAO_INGEST_STORAGE": "native",
        "QIANSHAO_INGEST_LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{port}"
    proc = start_service("ingest", env)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    accepted = 0
    try:
        await wait_ready(url)
        hdr = identity_header(scopes=["readings:write", "stations:write"])
        async with httpx.AsyncClient(base_url=url, headers=hdr, timeout=30) as c:
            r = await c.post(
                "/v1/stations",
                json={
                    "id": "RG1",
                    "name": "g",
                    "kind": "rain_gauge",
                    "region_code": "110101001001",
                },
            )
            assert r.status_code == 201
            for batch in range(24):
                if batch in (8, 16):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    proc = start_service("ingest", env)
                    await wait_ready(url)
                readings = [
                    {
                        "station_id": "RG1",
                        "metric": "rainfall",
                        "unit": "mm",
                        "value": i % 7,
                        "ts": (t0 + timedelta(seconds=batch * 1000 + i)).isoformat(),
                    }
                    for i in range(250)
                ]
                r = await c.post("/v1/readings", json={"source": "feed", "readings": readings})
                assert r.status_code == 202
                accepted += r.json()["accepted"]
                await asyncio.sleep(0.05)
        conn = await asyncpg.connect(database)
        try:

            async def all_stored() -> bool:
                return await conn.fetchval("SELECT count(*) FROM ingest.readings") >= accepted

            await eventually(all_stored, timeout_s=120, what="every accepted reading stored")
            await asyncio.sleep(1)
            assert await conn.fetchval("SELECT count(*) FROM ingest.readings") == accepted == 6000
        finally:
            await conn.close()
        published = await read_all(broker.bootstrap, f"{topic_prefix}readings.v1")
        assert len({p["event_id"] for p in published}) == accepted
    finally:
        stop(proc)
