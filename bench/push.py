"""HTTP push: readings/s answered 202 through the gateway (API key, authorisation, proxying) as a
ratio to pushing to ingest directly with a signed internal identity, in the same run and the same
stack. Batches of 1,000 readings, 4 concurrent clients, 60 batches each way. The stack runs in one
process (one event loop for every service), so both figures share its CPU."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson

from bench.scratch import scratch_database
from shared.devstack.inprocess import running_stack
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET

BATCH = 1000
BATCHES = 60
CLIENTS = 4
STATIONS = 200


def _bodies(offset: int) -> list[bytes]:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    out = []
    for b in range(BATCHES):
        readings = [
            {
                "station_id": f"P{i % STATIONS:03d}",
                "metric": "water_level",
                "unit": "m",
                "value": 2.0,
                "ts": (t0 + timedelta(seconds=offset + b * BATCH + i)).isoformat(),
            }
            for i in range(BATCH)
        ]
        out.append(orjson.dumps({"source": "city-platform", "readings": readings}))
    return out


async def _push(base: str, path: str, headers: dict[str, str], bodies: list[bytes]) -> float:
    queue = list(bodies)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
            while queue:
                body = queue.pop()
                r = await c.post(path, content=body)
                if r.status_code != 202 or r.json()["accepted"] != BATCH:
                    raise RuntimeError(f"push failed: {r.status_code} {r.text[:200]}")

    t = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return len(bodies) * BATCH / (time.perf_counter() - t)


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    async with (
        scratch_database(admin_dsn) as dsn,
        running_stack(dsn, bootstrap, f"bp{uuid.uuid4().hex[:6]}.") as stack,
    ):
        pool = await asyncpg.connect(dsn)
        await pool.executemany(
            """INSERT INTO ingest.stations (id, name, kind, region_code)
               VALUES ($1, $1, 'water_level', '110101001001')""",
            [(f"P{i:03d}",) for i in range(STATIONS)],
        )
        await pool.close()
        ident = Identity(
            subject="bench", kind="operator", roles=["admin"], scopes=[], region_prefix=""
        )
        direct_hdr = {
            "X-Qianshao-Identity": sign(ident, DEV_INTERNAL_SECRET, datetime.now(UTC), ttl_s=3600),
            "Content-Type": "application/json",
        }
        gw_hdr = {"X-API-Key": stack.api_key, "Content-Type": "application/json"}
        # warm both paths, then measure each twice, alternating
        await _push(stack.services["ingest"], "/v1/readings", direct_hdr, _bodies(10**6)[:4])
        await _push(stack.gateway, "/api/v1/ingest/readings", gw_hdr, _bodies(2 * 10**6)[:4])
        direct = gateway = 0.0
        for k in range(2):
            direct = max(
                direct,
                await _push(
                    stack.services["ingest"], "/v1/readings", direct_hdr, _bodies(k * 10**5)
                ),
            )
            gateway = max(
                gateway,
                await _push(
                    stack.gateway,
                    "/api/v1/ingest/readings",
                    gw_hdr,
                    _bodies(5 * 10**6 + k * 10**5),
                ),
            )
    print(f"\n## HTTP push ({BATCH:,} readings per POST, {CLIENTS} clients)")
    print(f"- baseline (straight to ingest, signed identity): {direct:,.0f} readings/s")
    print(
        f"- through the gateway (API key, region check, proxy): {gateway:,.0f} readings/s "
        f"= {gateway / direct:.2f}× baseline; goal ≥ 0.8×"
    )
    return {"direct_rows_s": direct, "gateway_rows_s": gateway}
