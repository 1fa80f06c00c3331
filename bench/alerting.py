"""Alerting: a red warning to a million residents, risk event → first SMS, and HTTP pool sizing.

The alerting service runs as its own process, and so do the SMS stand-ins (Tencent's
``SendSms`` shape first, 200 numbers a request, signatures checked), as in a deployment.

1. **Risk event → first SMS.** Station events alternate red and clear on ``risk.events.v1``, one
   at a time; each makes a warning version sent by SMS to one village cadre. The figure is from
   producing the event to the provider receiving the message. Baseline, same run: one signed
   ``SendSms`` request from here straight to the provider.
2. **Fan-out to 1,000,000 residents.** A public warning is broadcast to a million residents of
   1,000 villages: the ledger rows are written in one statement, then the service drains them
   (with its shipped claim size and rounds) in requests of 200 numbers. Baseline, same run: the
   provider's own capacity, 100,000 numbers in 200-number requests sent straight from here with
   the same concurrency.
3. **HTTP pools.** 3,000 webhook POSTs at a concurrency of 50: httpx with a pool smaller than the
   concurrency (10), httpx with the pool the service uses (2 × concurrency), and aiohttp.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from bench.scratch import (
    alerting_env,
    scratch_database,
    sms_provider_env,
    start_fake_providers,
    wait_http,
)
from services.alerting.adapters.channels.sms import tc3_authorization
from services.alerting.adapters.publications import broadcast
from services.alerting.app import MIGRATIONS
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.devstack.fakesms import (
    TENCENT_SECRET_ID,
    TENCENT_SECRET_KEY,
)
from shared.devstack.procs import free_port

RESIDENTS = int(os.environ.get("QIANSHAO_BENCH_RESIDENTS", "1000000"))
EVENTS = 40
CONCURRENCY = 16


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _service_env(dsn: str, bootstrap: str, prefix: str, port: int, fake: str) -> dict[str, str]:
    p = "QIANSHAO_ALERTING_"
    return {
        **os.environ,
        **alerting_env(dsn, bootstrap, prefix, port),
        f"{p}DB_POOL_MAX": "12",
        f"{p}DELIVERY_CONCURRENCY": str(CONCURRENCY),
        # the events alternate raise and all-clear every few milliseconds: without this the
        # group interval would hold each all-clear (raises never wait), flapping would hold
        # them longer, and storm mode would digest the cadre's messages
        f"{p}GROUP_INTERVAL_S": "0",
        f"{p}FLAP_THRESHOLD": "1000000",
        f"{p}STORM_LIMIT": "0",
        **sms_provider_env(fake),
    }


async def _send_direct(c: httpx.AsyncClient, fake: str, numbers: list[str], text: str) -> None:
    payload = orjson.dumps(
        {
            "PhoneNumberSet": numbers,
            "SmsSdkAppId": "1400000001",
            "SignName": "应急管理局",
            "TemplateId": "100001",
            "TemplateParamSet": [text],
            "SessionContext": uuid.uuid4().hex,
        }
    )
    ts = int(time.time())
    host = httpx.URL(fake).netloc.decode()
    r = await c.post(
        f"{fake}/tencent/",
        content=payload,
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "X-TC-Action": "SendSms",
            "X-TC-Version": "2021-01-11",
            "X-TC-Timestamp": str(ts),
            "Authorization": tc3_authorization(
                TENCENT_SECRET_ID, TENCENT_SECRET_KEY, host, "sms", ts, payload
            ),
        },
    )
    r.raise_for_status()


async def _stats(c: httpx.AsyncClient, fake: str) -> dict[str, Any]:
    return (await c.get(f"{fake}/sms/stats")).json()  # type: ignore[no-any-return]


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    prefix = f"b{uuid.uuid4().hex[:6]}."
    fake_port, port = free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    procs: list[subprocess.Popen[bytes]] = []
    res: dict[str, float] = {}
    async with scratch_database(admin_dsn) as dsn:
        pool = await create_pool(dsn, max_size=4)
        try:
            procs.append(start_fake_providers(fake_port))
            await migrate(pool, "alerting", MIGRATIONS)
            await pool.execute(
                """INSERT INTO alerting.persons (name, role, region_code, jurisdiction, phone)
                   VALUES ('村干部', 'village_cadre', '110101001001', '110101001001',
                           '13600000000')"""
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "shared.cli", "serve", "alerting"],
                    env=_service_env(dsn, bootstrap, prefix, port, fake),
                    stderr=subprocess.DEVNULL,
                )
            )
            await wait_http(f"{fake}/sms/stats")
            await wait_http(f"http://127.0.0.1:{port}/readyz")
            async with httpx.AsyncClient(
                timeout=30, limits=httpx.Limits(max_connections=2 * CONCURRENCY)
            ) as c:
                res.update(await _latency(c, fake, bootstrap, prefix))
                res.update(await _fan_out(c, pool, fake))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            await pool.close()
    res.update(await _pools())
    _print(res)
    return res


async def _latency(
    c: httpx.AsyncClient, fake: str, bootstrap: str, prefix: str
) -> dict[str, float]:
    from aiokafka import AIOKafkaProducer

    direct = []
    for _ in range(EVENTS):
        start = time.perf_counter()
        await _send_direct(c, fake, ["+8613600000001"], "基线短信")
        direct.append(time.perf_counter() - start)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    lat: list[float] = []
    try:
        for i in range(EVENTS + 3):
            before = (await _stats(c, fake))["messages"]
            now = datetime.now(UTC)
            ev = {
                "event_id": f"bench-{uuid.uuid4().hex}",
                "produced_at": now.isoformat(),
                "scope": "station",
                "station_id": "RG1",
                "region_code": "110101001001",
                "hazard": "rainstorm",
                "rule_id": "threshold:rainfall_1h",
                "previous_level": "none" if i % 2 == 0 else "red",
                "level": "red" if i % 2 == 0 else "none",
                "change": "raised" if i % 2 == 0 else "cleared",
                "event_time": now.isoformat(),
                "evidence": {
                    "rule_id": "threshold:rainfall_1h",
                    "metric": "rainfall_1h",
                    "value": 1,
                },
            }
            start = datetime.now(UTC)
            await producer.send_and_wait(Topics(prefix).risk_events, orjson.dumps(ev), key=b"RG1")
            for _ in range(3000):
                s = await _stats(c, fake)
                if s["messages"] > before:
                    break
                await asyncio.sleep(0.005)
            got = datetime.fromisoformat(s["last"]["received_at"])
            if i >= 3:  # the first few warm the pools and the consumer
                lat.append((got - start).total_seconds())
    finally:
        await producer.stop()
    return {
        "sms_direct_p50_ms": statistics.median(direct) * 1000,
        "sms_direct_p99_ms": pct(direct, 99) * 1000,
        "event_sms_p50_ms": statistics.median(lat) * 1000,
        "event_sms_p99_ms": pct(lat, 99) * 1000,
    }


async def _fan_out(c: httpx.AsyncClient, pool: Any, fake: str) -> dict[str, float]:
    # the provider's own capacity, first
    sem = asyncio.Semaphore(CONCURRENCY)
    raw_n = 100_000

    async def one(k: int) -> None:
        async with sem:
            await _send_direct(
                c, fake, [f"+8618{k * 200 + j:09d}" for j in range(200)], "基线：容量测量"
            )

    start = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(raw_n // 200)))
    raw_rate = raw_n / (time.perf_counter() - start)

    await pool.execute(
        """INSERT INTO alerting.residents (region_code, phone)
           SELECT '110101001' || lpad((i % 1000 + 1)::text, 3, '0'), (15000000000 + i)::text
             FROM generate_series(0, $1 - 1) AS i""",
        RESIDENTS,
    )
    wid = "bench-public"
    now = datetime.now(UTC)
    await pool.execute(
        """INSERT INTO alerting.warnings (id, hazard, region_code, level, state, kind, identifier)
           VALUES ($1, 'flood', '110101001000', 4, 'issued', 'public', 'BENCH_1')""",
        wid,
    )
    await pool.execute(
        """INSERT INTO alerting.warning_versions (warning_id, version, msg_type, level,
               identifier, sent, headline, description, station_ids, cause_event)
           VALUES ($1, 1, 'Alert', 4, 'BENCH_1', $2, '清河镇发布暴雨红色预警（I级）',
                   '全镇启动防汛应急响应。', '{RG1}', 'bench')""",
        wid,
        now,
    )
    before = (await _stats(c, fake))["messages"]
    start = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        n = await broadcast(
            conn, warning_id=wid, version=1, areas=["110101001000"], drill=False, now=now
        )
    written = time.perf_counter() - start
    assert n == RESIDENTS, n
    while True:
        s = await _stats(c, fake)
        if s["messages"] - before >= RESIDENTS:
            break
        await asyncio.sleep(0.25)
    total = time.perf_counter() - start
    doubled = s["messages"] - before - RESIDENTS
    return {
        "raw_rate": raw_rate,
        "fanout_written_s": written,
        "fanout_total_s": total,
        "fanout_rate": RESIDENTS / total,
        "fanout_extra_messages": float(doubled),
    }


async def _pools() -> dict[str, float]:
    """Requests per second to a local webhook receiver at a concurrency of 50."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "fake-providers", "--port", str(port), "--bulk"],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    n, conc = 3000, 50
    out: dict[str, float] = {}
    try:
        await wait_http(f"{url}/sms/stats")
        body = orjson.dumps({"msg_type": "Alert", "level": "red", "headline": "bench"})
        for name, size in (("httpx_pool_10", 10), ("httpx_pool_100", 100)):
            async with httpx.AsyncClient(
                timeout=60,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            ) as c:
                out[name] = await _hammer(
                    lambda c=c: c.post(f"{url}/webhook/bench", content=body), n, conc
                )
        async with httpx.AsyncClient(
            timeout=60,
            transport=AiohttpTransport(limits=httpx.Limits(max_connections=100)),
        ) as c:
            out["httpx_over_aiohttp"] = await _hammer(
                lambda c=c: c.post(f"{url}/webhook/bench", content=body), n, conc
            )
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

            async def post() -> None:
                async with session.post(f"{url}/webhook/bench", data=body) as r:
                    await r.read()

            out["aiohttp"] = await _hammer(post, n, conc)
    finally:
        proc.terminate()
        proc.wait(30)
    return out


async def _hammer(call: Any, n: int, conc: int) -> float:
    sem = asyncio.Semaphore(conc)

    async def one() -> None:
        async with sem:
            await call()

    await asyncio.gather(*(one() for _ in range(50)))  # warm up
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - start)


def _print(res: dict[str, float]) -> None:
    print("\n## Alerting")
    print("| figure | value | ratio to baseline | goal |")
    print("|---|---|---|---|")
    base = res["sms_direct_p50_ms"]
    print(f"| baseline: one SendSms straight to the provider, p50 | {base:.1f} ms | 1.00× | |")
    print(
        f"| baseline p99 | {res['sms_direct_p99_ms']:.1f} ms | "
        f"{res['sms_direct_p99_ms'] / base:.2f}× | |"
    )
    print(
        f"| risk event → first SMS, p50 | {res['event_sms_p50_ms']:.1f} ms | "
        f"{res['event_sms_p50_ms'] / base:.2f}× | |"
    )
    print(
        f"| risk event → first SMS, p99 | {res['event_sms_p99_ms']:.1f} ms | "
        f"{res['event_sms_p99_ms'] / base:.2f}× | < 500 ms |"
    )
    raw = res["raw_rate"]
    print(f"| baseline: provider capacity, numbers/s | {raw:,.0f} | 1.00× | |")
    print(f"| 1,000,000 residents: ledger written | {res['fanout_written_s']:.1f} s | | |")
    print(
        f"| 1,000,000 residents: all accepted by the provider | {res['fanout_total_s']:.1f} s "
        f"| | < 60 s |"
    )
    print(
        f"| fan-out rate, numbers/s | {res['fanout_rate']:,.0f} | {res['fanout_rate'] / raw:.2f}× "
        f"| |"
    )
    print(f"| messages beyond one per resident | {res['fanout_extra_messages']:.0f} | | 0 |")
    aio = res["aiohttp"]
    print(f"| baseline: aiohttp, requests/s at concurrency 50 | {aio:,.0f} | 1.00× | |")
    for k in ("httpx_pool_10", "httpx_pool_100", "httpx_over_aiohttp"):
        print(f"| {k.replace('_', ' ')} | {res[k]:,.0f} | {res[k] / aio:.2f}× | |")
