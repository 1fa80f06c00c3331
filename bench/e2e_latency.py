"""Reading pushed → risk event published → warning delivered, through the whole stack.

One red water level at a time, each from a station in a township of its own; each reading makes
exactly one station risk event and one new warning, delivered to the fake webhook. The figures
are the time from the start of the push to a consumer of ``risk.events.v1`` receiving the event
whose evidence is that reading, and to the webhook receiving the version. Baseline, measured in
the same run: the push alone (gateway → ingest → broker ack, answered 202), i.e. what the
upstream platform waits for. The ratios say how much the rest of the pipeline adds on top of one
hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.scratch import scratch_database
from shared.devstack.inprocess import running_stack

N = 40


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    prefix = f"b{uuid.uuid4().hex[:6]}."
    async with (
        scratch_database(admin_dsn) as dsn,
        running_stack(dsn, bootstrap, prefix) as stack,
        _risk_events(bootstrap, f"{prefix}risk.events.v1") as risk_seen,
    ):
        arrived = asyncio.Event()
        stack.inbox.on_message = lambda _m: arrived.set()
        async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
            r = await c.post(
                "/api/v1/auth/token", data={"username": "admin", "password": stack.admin_password}
            )
            admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
            # one station per township: each red reading opens a warning of its own, sent at
            # once (group_wait 0), never an update held by the group interval or flap damping
            for i in range(N + 3):
                (
                    await c.post(
                        "/api/v1/ingest/stations",
                        headers=admin,
                        json={
                            "id": f"B{i}",
                            "name": "bench",
                            "kind": "water_level",
                            "region_code": f"110101{i + 1:03d}001",
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
            risk: list[float] = []
            for i in range(N + 3):
                arrived.clear()
                body = {
                    "source": "city-platform",
                    "readings": [
                        {
                            "station_id": f"B{i}",
                            "metric": "water_level",
                            "unit": "m",
                            "ts": (t0 + timedelta(seconds=i)).isoformat(),
                            "value": 5.0,
                        }
                    ],
                }
                start = time.perf_counter()
                risk_seen.pop(body["readings"][0]["ts"], None)
                r = await c.post("/api/v1/ingest/readings", json=body, headers=key)
                acked = time.perf_counter()
                assert r.status_code == 202
                await asyncio.wait_for(arrived.wait(), 30)
                done = time.perf_counter()
                if i >= 3:  # the first few warm the pools and the consumers
                    push.append(acked - start)
                    e2e.append(done - start)
                    ts = body["readings"][0]["ts"]
                    for _ in range(500):  # the tail may see it a moment after the webhook
                        if ts in risk_seen:
                            break
                        await asyncio.sleep(0.01)
                    risk.append(risk_seen[ts] - start)
                await asyncio.sleep(0.05)
    res = {
        "push_p50_ms": statistics.median(push) * 1000,
        "risk_p50_ms": statistics.median(risk) * 1000,
        "risk_p99_ms": pct(risk, 99) * 1000,
        "e2e_p50_ms": statistics.median(e2e) * 1000,
        "e2e_p95_ms": pct(e2e, 95) * 1000,
        "e2e_p99_ms": pct(e2e, 99) * 1000,
        "e2e_max_ms": max(e2e) * 1000,
    }
    print(
        "\n## End to end: reading pushed → risk event → warning delivered to the webhook "
        f"({N} readings, one at a time)"
    )
    print("| figure | ms | ratio to baseline |")
    print("|---|---|---|")
    base = res["push_p50_ms"]
    print(f"| baseline: push answered 202, p50 | {base:.1f} | 1.00× |")
    for k in ("risk_p50_ms", "risk_p99_ms"):
        print(f"| {k[5:8]} reading → risk event consumed | {res[k]:.1f} | {res[k] / base:.2f}× |")
    for k in ("e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms", "e2e_max_ms"):
        print(f"| {k[4:7]} reading → delivered | {res[k]:.1f} | {res[k] / base:.2f}× |")
    return res


@contextlib.asynccontextmanager
async def _risk_events(bootstrap: str, topic: str) -> AsyncIterator[dict[str, float]]:
    """When each station risk event arrived, by the timestamp of the reading in its evidence."""
    seen: dict[str, float] = {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await consumer.start()

    async def tail() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    ev = orjson.loads(m.value)
                    for r in ev.get("evidence", {}).get("readings", []):
                        if ev.get("scope") == "station" and "ts" in r:
                            seen[datetime.fromisoformat(r["ts"]).isoformat()] = now

    task = None
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        task = asyncio.create_task(tail())
        yield seen
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer.stop()
