"""Reading pushed → warning delivered, through the whole stack.

A station's water level alternates between red and clear, one reading at a time; each reading
makes exactly one warning version (Alert or Cancel), delivered to the fake webhook. The figure is
the time from the start of the push to the webhook receiving the version. Baseline, measured in
the same run: the push alone (gateway → ingest → broker ack, answered 202), i.e. what the upstream
platform waits for. The ratio says how much the rest of the pipeline adds on top of one hop.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from shared.devstack.inprocess import running_stack

N = 40


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    async with running_stack(dsn, bootstrap, f"b{uuid.uuid4().hex[:6]}.") as stack:
        arrived = asyncio.Event()
        stack.inbox.on_message = lambda _m: arrived.set()
        async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
            r = await c.post(
                "/api/v1/auth/token", data={"username": "admin", "password": stack.admin_password}
            )
            admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
            (
                await c.post(
                    "/api/v1/ingest/stations",
                    headers=admin,
                    json={
                        "id": "B1",
                        "name": "bench",
                        "kind": "water_level",
                        "region_code": "110101001001",
                        "attributes": {"thresholds": {"water_level": {"blue": 3, "red": 4.5}}},
                    },
                )
            ).raise_for_status()
            (
                await c.post(
                    "/api/v1/alerts/subscriptions",
                    headers=admin,
                    json={
                        "name": "bench",
                        "channel": "webhook",
                        "target": f"{stack.fake}/webhook/bench",
                        "region_prefix": "110101",
                        "min_level": "blue",
                    },
                )
            ).raise_for_status()
            key = {"X-API-Key": stack.api_key}
            t0 = datetime.now(UTC) - timedelta(hours=1)
            e2e: list[float] = []
            push: list[float] = []
            for i in range(N + 3):
                arrived.clear()
                body = {
                    "source": "city-platform",
                    "readings": [
                        {
                            "station_id": "B1",
                            "metric": "water_level",
                            "unit": "m",
                            "ts": (t0 + timedelta(seconds=i)).isoformat(),
                            "value": 5.0 if i % 2 == 0 else 1.0,
                        }
                    ],
                }
                start = time.perf_counter()
                r = await c.post("/api/v1/ingest/readings", json=body, headers=key)
                acked = time.perf_counter()
                assert r.status_code == 202
                await asyncio.wait_for(arrived.wait(), 30)
                done = time.perf_counter()
                if i >= 3:  # the first few warm the pools and the consumers
                    push.append(acked - start)
                    e2e.append(done - start)
                await asyncio.sleep(0.05)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await conn.close()
    res = {
        "push_p50_ms": statistics.median(push) * 1000,
        "e2e_p50_ms": statistics.median(e2e) * 1000,
        "e2e_p95_ms": pct(e2e, 95) * 1000,
        "e2e_p99_ms": pct(e2e, 99) * 1000,
        "e2e_max_ms": max(e2e) * 1000,
    }
    print(
        "\n## End to end: reading pushed → warning delivered to the webhook "
        f"({N} warning versions, one at a time)"
    )
    print("| figure | ms | ratio to baseline |")
    print("|---|---|---|")
    base = res["push_p50_ms"]
    print(f"| baseline: push answered 202, p50 | {base:.1f} | 1.00× |")
    for k in ("e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms", "e2e_max_ms"):
        print(f"| {k[4:7]} reading → delivered | {res[k]:.1f} | {res[k] / base:.2f}× |")
    return res
