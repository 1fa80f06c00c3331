"""The gateway's cost: requests/s through the gateway as a ratio to calling the service directly
(with a signed internal identity), and the latency it adds per request (p50, p99), measured in
the same run against the same ingest process.

Ingest and the gateway run as separate processes, as deployed; the load comes from this process
over aiohttp (a client cheaper than the servers it measures). Three request kinds:

- ``GET /stations/{id}``: a small read, where the proxy hop weighs most;
- ``POST /readings`` with 100 readings: a typical upstream push;
- the same push, signed (HMAC and a nonce written to PostgreSQL) instead of an API key.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import orjson

from bench.scratch import scratch_database, start_service
from services.gateway.adapters.auth import create_api_client
from services.gateway.domain.signing import sign_request
from shared.devstack.procs import free_port, terminate, wait_for_port
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET

CONCURRENCY = 16
SECONDS = 4.0
SEQUENTIAL = 1500
STATIONS = 50
READINGS = 100

Headers = Callable[[str, str, bytes], dict[str, str]]


async def _wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready")


def _push_body(n: int) -> bytes:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    return orjson.dumps(
        {
            "source": "city-platform",
            "readings": [
                {
                    "station_id": f"G{(n + i) % STATIONS:03d}",
                    "metric": "water_level",
                    "unit": "m",
                    "value": 2.0,
                    "ts": (t0 + timedelta(seconds=n * READINGS + i)).isoformat(),
                }
                for i in range(READINGS)
            ],
        }
    )


class Load:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.n = 0

    async def one(self, method: str, url: str, path: str, headers: Headers) -> float:
        self.n += 1
        body = _push_body(self.n) if method == "POST" else b""
        h = headers(method, path, body)
        t = time.perf_counter()
        async with self.session.request(method, url + path, data=body or None, headers=h) as r:
            await r.read()
            if r.status not in (200, 202):
                raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
        return time.perf_counter() - t

    async def throughput(self, method: str, url: str, path: str, headers: Headers) -> float:
        done = 0
        stop = time.perf_counter() + SECONDS

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await self.one(method, url, path, headers)
                done += 1

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - t)

    async def latencies(self, method: str, url: str, path: str, headers: Headers) -> list[float]:
        return [await self.one(method, url, path, headers) for _ in range(SEQUENTIAL)]


def _q(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[round(q * 100) - 1] * 1000


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    async with scratch_database(admin_dsn) as dsn:
        ports = {"ingest": free_port(), "gateway": free_port()}
        base = {"database_url": dsn, "kafka_bootstrap": bootstrap, "log_level": "WARNING"}
        prefix = f"bg{uuid.uuid4().hex[:6]}."
        ingest_env = {f"QIANSHAO_INGEST_{k.upper()}": v for k, v in base.items()} | {
            "QIANSHAO_INGEST_PORT": str(ports["ingest"]),
            "QIANSHAO_INGEST_TOPIC_PREFIX": prefix,
            "QIANSHAO_INGEST_RUN_CONSUMER": "false",
            "QIANSHAO_INGEST_HEALTH_SWEEP_S": "0",
        }
        ingest = f"http://127.0.0.1:{ports['ingest']}"
        gateway_env = {f"QIANSHAO_GATEWAY_{k.upper()}": v for k, v in base.items()} | {
            "QIANSHAO_GATEWAY_PORT": str(ports["gateway"]),
            "QIANSHAO_GATEWAY_INGEST_URL": ingest,
            # limits far above the load: the bench measures the proxy, not the limiter's refusals
            "QIANSHAO_GATEWAY_RATE_LIMITS": '{"ingest:read": 10000000, "ingest:write": 10000000}',
        }
        procs = [start_service("ingest", ingest_env)]
        try:
            wait_for_port(ports["ingest"], timeout_s=60)
            await _wait_ready(ingest)
            procs.append(start_service("gateway", gateway_env))
            wait_for_port(ports["gateway"], timeout_s=60)
            gateway = f"http://127.0.0.1:{ports['gateway']}"
            await _wait_ready(gateway)
            return await _measure(dsn, ingest, gateway)
        finally:
            for p in procs:
                terminate(p)


async def _measure(dsn: str, ingest: str, gateway: str) -> dict[str, float]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    await pool.executemany(
        """INSERT INTO ingest.stations (id, name, kind, region_code)
           VALUES ($1, $1, 'water_level', '110101001001')""",
        [(f"G{i:03d}",) for i in range(STATIONS)],
    )
    key_id, key = await create_api_client(
        pool, client_id="bench", name="bench", sources=["city-platform"], region_prefix="110101"
    )
    await pool.close()
    ident = Identity(subject="bench", kind="operator", roles=["admin"])
    signed = sign(ident, DEV_INTERNAL_SECRET, datetime.now(UTC), ttl_s=3600)

    def direct(method: str, path: str, body: bytes) -> dict[str, str]:
        return {"X-Qianshao-Identity": signed, "Content-Type": "application/json"}

    def with_key(method: str, path: str, body: bytes) -> dict[str, str]:
        return {"X-API-Key": key, "Content-Type": "application/json"}

    def hmac_signed(method: str, path: str, body: bytes) -> dict[str, str]:
        now = int(time.time())
        auth = sign_request(key, key_id, method, path, "", body, now, secrets.token_hex(12))
        return {"Authorization": auth, "Content-Type": "application/json"}

    kinds = [
        ("GET one station", "GET", "/v1/stations/G007", "/api/v1/ingest/stations/G007", with_key),
        (f"POST {READINGS} readings", "POST", "/v1/readings", "/api/v1/ingest/readings", with_key),
        (
            f"POST {READINGS} readings, signed",
            "POST",
            "/v1/readings",
            "/api/v1/ingest/readings",
            hmac_signed,
        ),
    ]
    out: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        load = Load(session)
        print(
            f"\n## Gateway ({CONCURRENCY} concurrent clients for {SECONDS:g} s; latency over "
            f"{SEQUENTIAL} sequential requests)"
        )
        for name, method, dpath, gpath, gw_headers in kinds:
            await load.throughput(method, ingest, dpath, direct)  # warm both paths
            await load.throughput(method, gateway, gpath, gw_headers)
            d = max([await load.throughput(method, ingest, dpath, direct) for _ in range(2)])
            g = max([await load.throughput(method, gateway, gpath, gw_headers) for _ in range(2)])
            dl = await load.latencies(method, ingest, dpath, direct)
            gl = await load.latencies(method, gateway, gpath, gw_headers)
            over50, over99 = _q(gl, 0.5) - _q(dl, 0.5), _q(gl, 0.99) - _q(dl, 0.99)
            print(
                f"- {name}: direct {d:,.0f} req/s, through the gateway {g:,.0f} req/s "
                f"= {g / d:.2f}× baseline (goal ≥ 0.8×); added latency p50 {over50:.2f} ms, "
                f"p99 {over99:.2f} ms (direct p50 {_q(dl, 0.5):.2f} / p99 {_q(dl, 0.99):.2f} ms)"
            )
            out[f"{name}: ratio"] = g / d
            out[f"{name}: p99 overhead ms"] = over99
    return out
