"""End-to-end latency under steady load: a reading pushed → the warning it raises delivered by SMS,
at 1 k, 5 k and 10 k readings/s, each held for ``QIANSHAO_BENCH_STEADY_S`` seconds (120 by
default).

Ingest, risk and alerting run as processes (bench/chaos.py's pipeline, no faults), with the
stand-in SMS providers. The load is calm water levels from 500 stations. Every two seconds a
*probe* station, alone in its own township with its own village cadre, reports a red level. The
time from that push to the provider receiving the cadre's SMS is one latency sample.

The baseline, measured in the same run and at the same load, is the push itself answered 202
(what the upstream platform waits for). The achieved rate is reported next to the target: when
the pipeline cannot keep up, the latencies show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench.chaos import THRESHOLDS, Pipeline, identity_headers
from shared.devstack.broker import TansuBroker
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import SmsState
from shared.devstack.inprocess import serve
from shared.devstack.postgres import PostgresServer

LOADS = (1000, 5000, 10000)
LOAD_STATIONS = 500
PROBE_EVERY_S = 2.0
TICK_S = 0.1
CLIENTS = 4
WARM_UP = 3


def _q(xs: list[float], q: float) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q * 100) - 1]


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    """Runs on a PostgreSQL and a broker of its own (the arguments are unused: the processes need
    a database they can reach by DSN, and a fresh broker keeps the topics small)."""
    del admin_dsn, bootstrap
    seconds = float(os.environ.get("QIANSHAO_BENCH_STEADY_S", "120"))
    out: dict[str, float] = {}
    async with pipeline("qianshao-steady-") as (pipe, arrivals):
        probes = int(seconds / PROBE_EVERY_S) + 2
        await _setup(pipe, probes * len(LOADS) + WARM_UP)
        # warm up (first connections, first warning of each process), not measured
        await _level(pipe, 200, WARM_UP * PROBE_EVERY_S, probes * len(LOADS), WARM_UP, arrivals)
        print(
            f"\n## End-to-end latency under steady load ({seconds:g} s per load, "
            f"{LOAD_STATIONS} stations, a probe every {PROBE_EVERY_S:g} s)"
        )
        print(
            "| target readings/s | achieved | push answered 202 p50 (baseline) | "
            "reading → SMS p50 | p95 | p99 | p99 ÷ baseline | probes delivered |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for k, rate in enumerate(LOADS):
            res = await _level(pipe, rate, seconds, k * probes, probes, arrivals)
            out.update({f"{rate}: {name}": v for name, v in res.items()})
            print(
                f"| {rate:,} | {res['achieved']:,.0f} | {res['push_p50_ms']:.1f} ms | "
                f"{res['p50_ms']:.0f} ms | {res['p95_ms']:.0f} ms | "
                f"{res['p99_ms']:.0f} ms | {res['p99_ms'] / res['push_p50_ms']:.1f}× | "
                f"{res['delivered']:.0f}/{res['probes']:.0f} |"
            )
        print("- goal: p99 reading → warning < 1 s at 10 k readings/s")
    return out


@contextlib.asynccontextmanager
async def pipeline(prefix: str) -> AsyncIterator[tuple[Pipeline, dict[str, float]]]:
    """A PostgreSQL and a broker of its own, the stand-in SMS providers, and ingest, risk and
    alerting as processes; yields the pipeline and, filled as SMS arrive, the time each number
    first received one."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    pg = PostgresServer(work / "pgdata").start()
    broker = TansuBroker(work / "broker").start()
    sms = SmsState(keep_log=False)
    arrivals: dict[str, float] = {}

    def on_text(t: dict[str, object]) -> None:
        for n in t["numbers"]:  # type: ignore[attr-defined]
            arrivals.setdefault(str(n), time.monotonic())

    sms.on_text = on_text
    try:
        async with serve(fake_app(sms=sms)) as fake:
            pipe = Pipeline(work, pg, broker, fake)
            try:
                await pipe.start_all()
                yield pipe, arrivals
            finally:
                pipe.stop_all()
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def _probe_region(p: int) -> str:
    return f"1101{2 + p // 999:02d}{p % 999 + 1:03d}001"


async def _setup(pipe: Pipeline, probes: int) -> None:
    attributes = orjson.dumps({"thresholds": THRESHOLDS}).decode()
    conn = await asyncpg.connect(pipe.pg.dsn)
    try:
        await conn.executemany(
            """INSERT INTO ingest.stations (id, name, kind, region_code, interval_s, attributes)
               VALUES ($1, $1, 'water_level', $2, 60, $3::jsonb)""",
            [(f"L{i:04d}", f"110101001{i % 999 + 1:03d}", attributes) for i in range(LOAD_STATIONS)]
            + [(f"P{p:04d}", _probe_region(p), attributes) for p in range(probes)],
        )
        await conn.executemany(
            """INSERT INTO alerting.persons (name, role, region_code, jurisdiction, phone)
               VALUES ($1, 'village_cadre', $2, $2, $3)""",
            [(f"村干部{p}", _probe_region(p), str(13800000000 + p)) for p in range(probes)],
        )
    finally:
        await conn.close()


async def _level(
    pipe: Pipeline, rate: int, seconds: float, first: int, probes: int, arrivals: dict[str, float]
) -> dict[str, float]:
    per_tick = int(rate * TICK_S)
    per_station = max(1, per_tick // LOAD_STATIONS)
    stop = time.monotonic() + seconds
    accepted = 0
    push_ms: list[float] = []
    sent_at: dict[str, float] = {}
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=CLIENTS * 4)
    started = time.monotonic()

    async def producer() -> None:
        tick = 0
        t0 = time.time()
        while time.monotonic() < stop:
            at = t0 + tick * TICK_S
            await asyncio.sleep(max(0.0, at - time.time()))
            readings = []
            for j in range(per_tick):
                station = (tick * per_tick + j) % LOAD_STATIONS
                ts = at + (j // LOAD_STATIONS) * TICK_S / per_station
                readings.append(
                    {
                        "station_id": f"L{station:04d}",
                        "metric": "water_level",
                        "unit": "m",
                        "ts": datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds"),
                        "value": 1.0 + (tick % 10) / 100,
                    }
                )
            await queue.put(orjson.dumps({"source": "steady", "readings": readings}))
            tick += 1
        for _ in range(CLIENTS):
            await queue.put(None)

    async def client() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(
            base_url=pipe.url("ingest"),
            headers={**identity_headers(), "Content-Type": "application/json"},
            timeout=60,
        ) as c:
            while (body := await queue.get()) is not None:
                t = time.perf_counter()
                r = await c.post("/v1/readings", content=body)
                push_ms.append((time.perf_counter() - t) * 1000)
                if r.status_code == 202:
                    accepted += r.json()["accepted"]

    async def prober() -> None:
        async with httpx.AsyncClient(base_url=pipe.url("ingest"), headers=identity_headers()) as c:
            for p in range(first, first + probes):
                if time.monotonic() >= stop:
                    break
                now = datetime.now(UTC).isoformat(timespec="milliseconds")
                body = {
                    "source": "probe",
                    "readings": [
                        {
                            "station_id": f"P{p:04d}",
                            "metric": "water_level",
                            "unit": "m",
                            "ts": now,
                            "value": 4.9,
                        }
                    ],
                }
                sent_at[str(13800000000 + p)] = time.monotonic()
                r = await c.post("/v1/readings", json=body)
                r.raise_for_status()
                await asyncio.sleep(PROBE_EVERY_S)

    await asyncio.gather(producer(), prober(), *(client() for _ in range(CLIENTS)))
    achieved = accepted / (time.monotonic() - started)
    # let the last probes arrive (they are late only if the pipeline fell behind)
    for _ in range(600):
        if all(n in arrivals for n in sent_at):
            break
        await asyncio.sleep(0.2)
    lat = sorted((arrivals[n] - t) * 1000 for n, t in sent_at.items() if n in arrivals)
    await _drain(pipe)
    return {
        "achieved": achieved,
        "push_p50_ms": _q(push_ms, 0.5),
        "p50_ms": _q(lat, 0.5),
        "p95_ms": _q(lat, 0.95),
        "p99_ms": _q(lat, 0.99),
        "delivered": float(len(lat)),
        "probes": float(len(sent_at)),
    }


async def _drain(pipe: Pipeline) -> None:
    """Wait until risk has caught up with everything stored, before the next load level."""
    conn = await asyncpg.connect(pipe.pg.dsn)
    try:
        for _ in range(600):
            pending = await conn.fetchval(
                "SELECT count(*) FROM risk.outbox WHERE published_at IS NULL"
            )
            if not pending:
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
