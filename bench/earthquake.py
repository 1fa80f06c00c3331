"""Earthquake early warning: an upstream message → the first provider request, and → every one of
100,000 residents of its area.

The services run as processes, as deployed: the SMS stand-ins (Tencent's ``SendSms`` shape
first, 200 numbers a request, signatures checked), ingest (which takes the upstream CAP
message, stores it and publishes it on ``warnings.upstream.v1``) and alerting (which relays it on
the pre-authorised fast path: no group wait, no approval, no storm hold, ahead of every other
ledger row, to the people in scope and the residents of its area).

1. **First request.** ``EVENTS`` earthquake early warnings (CAP 1.2, each its own identifier) are
   POSTed one at a time to ingest's ``/v1/warnings`` for a county with one responsible person and
   no residents; the figure runs from the POST to the provider receiving the SMS. Baseline, same
   run: one signed ``SendSms`` request from here straight to the provider.
2. **Every resident.** One warning for a county of ``QIANSHAO_BENCH_EQ_RESIDENTS`` residents
   (100,000 by default); the figure runs from the POST to the provider receiving the last
   number. Baseline, same run: the same count of numbers in 200-number requests sent straight
   from here, at the service's delivery concurrency.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.alerting import CONCURRENCY, _send_direct, _service_env, _stats, pct
from bench.scratch import scratch_database, start_fake_providers, start_service, wait_http
from services.alerting.app import MIGRATIONS as ALERTING
from services.ingest.app import MIGRATIONS as INGEST
from shared.db import create_pool, migrate
from shared.devstack.procs import free_port
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET

EVENTS = 20
RESIDENTS = int(os.environ.get("QIANSHAO_BENCH_EQ_RESIDENTS", "100000"))
PERSON_COUNTY, RESIDENT_COUNTY = "110102", "110101"


def cap(identifier: str, county: str, sent: datetime) -> bytes:
    """An earthquake early warning as a provincial seismological bureau's platform sends it."""
    beijing = sent.astimezone(UTC) + timedelta(hours=8)
    stamp = beijing.replace(microsecond=0, tzinfo=None).isoformat() + "+08:00"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>11000043300000</sender>
  <sent>{stamp}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>zh-CN</language>
    <category>Geo</category>
    <event>地震预警</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Likely</certainty>
    <senderName>北京市地震局</senderName>
    <headline>地震预警：预计本地烈度6度，约20秒后到达</headline>
    <description>请立即就近避险。</description>
    <area>
      <areaDesc>{county}</areaDesc>
      <geocode><valueName>行政区划代码</valueName><value>{county}</value></geocode>
    </area>
  </info>
</alert>""".encode()


def _ingest_env(dsn: str, bootstrap: str, prefix: str, port: int) -> dict[str, str]:
    p = "QIANSHAO_INGEST_"
    return {
        f"{p}DATABASE_URL": dsn,
        f"{p}KAFKA_BOOTSTRAP": bootstrap,
        f"{p}TOPIC_PREFIX": prefix,
        f"{p}CONSUMER_GROUP": f"{prefix}ingest",
        f"{p}PORT": str(port),
        f"{p}LOG_LEVEL": "WARNING",
    }


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    prefix = f"q{uuid.uuid4().hex[:6]}."
    fake_port, ingest_port, alerting_port = free_port(), free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    ingest = f"http://127.0.0.1:{ingest_port}"
    procs: list[subprocess.Popen[bytes]] = []
    res: dict[str, float] = {}
    async with scratch_database(admin_dsn) as dsn:
        pool = await create_pool(dsn, max_size=4)
        try:
            procs.append(start_fake_providers(fake_port))
            await migrate(pool, "ingest", INGEST)
            await migrate(pool, "alerting", ALERTING)
            await pool.execute(
                """INSERT INTO alerting.persons (name, role, region_code, jurisdiction, phone)
                   VALUES ('村干部', 'village_cadre', $1, $1, '13600000000')""",
                f"{PERSON_COUNTY}001001",
            )
            await pool.execute(
                """INSERT INTO alerting.residents (region_code, phone)
                   SELECT $1 || lpad((i % 300 + 1)::text, 3, '0'), (15000000000 + i)::text
                     FROM generate_series(0, $2 - 1) AS i""",
                f"{RESIDENT_COUNTY}001",
                RESIDENTS,
            )
            procs.append(start_service("ingest", _ingest_env(dsn, bootstrap, prefix, ingest_port)))
            procs.append(
                start_service("alerting", _service_env(dsn, bootstrap, prefix, alerting_port, fake))
            )
            await wait_http(f"{fake}/sms/stats")
            await wait_http(f"{ingest}/readyz")
            await wait_http(f"http://127.0.0.1:{alerting_port}/readyz")
            async with httpx.AsyncClient(
                timeout=60, limits=httpx.Limits(max_connections=2 * CONCURRENCY)
            ) as c:
                res.update(await _first_request(c, fake, ingest))
                res.update(await _every_resident(c, fake, ingest))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            await pool.close()
    _print(res)
    return res


def _identity() -> dict[str, str]:
    ident = Identity(
        subject="seismo-platform",
        kind="api_client",
        scopes=["upstream_warnings:write"],
        region_prefix="11",
    )
    return {
        "X-Qianshao-Identity": sign(ident, DEV_INTERNAL_SECRET, datetime.now(UTC), ttl_s=3600),
        "Content-Type": "application/cap+xml",
    }


async def _post(c: httpx.AsyncClient, ingest: str, county: str) -> datetime:
    """POSTs one warning; when it was sent."""
    ident = f"11000043300000_{uuid.uuid4().hex[:12]}"
    start = datetime.now(UTC)
    r = await c.post(
        f"{ingest}/v1/warnings", content=cap(ident, county, start), headers=_identity()
    )
    r.raise_for_status()
    return start


async def _first_request(c: httpx.AsyncClient, fake: str, ingest: str) -> dict[str, float]:
    direct = []
    for _ in range(EVENTS):
        start = time.perf_counter()
        await _send_direct(c, fake, ["+8613600000001"], "基线短信")
        direct.append(time.perf_counter() - start)
    lat: list[float] = []
    for i in range(EVENTS + 3):
        before = (await _stats(c, fake))["messages"]
        start = await _post(c, ingest, PERSON_COUNTY)
        for _ in range(6000):
            s = await _stats(c, fake)
            if s["messages"] > before:
                break
            await asyncio.sleep(0.005)
        got = datetime.fromisoformat(s["last"]["received_at"])
        if i >= 3:  # the first few warm the pools and the consumers
            lat.append((got - start).total_seconds())
    return {
        "eq_direct_p50_ms": statistics.median(direct) * 1000,
        "eq_direct_p99_ms": pct(direct, 99) * 1000,
        "eq_first_p50_ms": statistics.median(lat) * 1000,
        "eq_first_p99_ms": pct(lat, 99) * 1000,
    }


async def _every_resident(c: httpx.AsyncClient, fake: str, ingest: str) -> dict[str, float]:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(k: int, n: int) -> None:
        async with sem:
            await _send_direct(c, fake, [f"+8618{k * 200 + j:09d}" for j in range(n)], "基线")

    start = time.perf_counter()
    await asyncio.gather(
        *(one(k, min(200, RESIDENTS - k * 200)) for k in range(-(-RESIDENTS // 200)))
    )
    direct_s = time.perf_counter() - start

    before = (await _stats(c, fake))["messages"]
    sent = await _post(c, ingest, RESIDENT_COUNTY)
    first: datetime | None = None
    while True:
        s: dict[str, Any] = await _stats(c, fake)
        if first is None and s["messages"] > before:
            first = datetime.fromisoformat(s["last"]["received_at"])
        if s["messages"] - before >= RESIDENTS:
            break
        await asyncio.sleep(0.05)
    last = datetime.fromisoformat(s["last"]["received_at"])
    assert first is not None
    return {
        "eq_residents_direct_s": direct_s,
        "eq_residents_first_s": (first - sent).total_seconds(),
        "eq_residents_all_s": (last - sent).total_seconds(),
        "eq_residents_extra": float(s["messages"] - before - RESIDENTS),
    }


def _print(res: dict[str, float]) -> None:
    print("\n## Earthquake early warning: upstream message → SMS")
    print("| figure | value | ratio to baseline | goal |")
    print("|---|---|---|---|")
    base = res["eq_direct_p50_ms"]
    print(f"| baseline: one SendSms straight to the provider, p50 | {base:.1f} ms | 1.00× | |")
    print(
        f"| baseline p99 | {res['eq_direct_p99_ms']:.1f} ms | "
        f"{res['eq_direct_p99_ms'] / base:.2f}× | |"
    )
    for key, label in (("eq_first_p50_ms", "p50"), ("eq_first_p99_ms", "p99")):
        print(
            f"| CAP POST to ingest → first provider request, {label} | {res[key]:.1f} ms | "
            f"{res[key] / base:.2f}× | |"
        )
    raw = res["eq_residents_direct_s"]
    print(f"| baseline: {RESIDENTS:,} numbers straight to the provider | {raw:.1f} s | 1.00× | |")
    print(
        f"| CAP POST → first resident's SMS | {res['eq_residents_first_s']:.2f} s | "
        f"{res['eq_residents_first_s'] / raw:.2f}× | |"
    )
    print(
        f"| CAP POST → all {RESIDENTS:,} residents | {res['eq_residents_all_s']:.1f} s | "
        f"{res['eq_residents_all_s'] / raw:.2f}× | |"
    )
    print(f"| messages beyond one per resident | {res['eq_residents_extra']:.0f} | | 0 |")
