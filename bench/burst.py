"""Alerting at storm scale, side by side with Alertmanager, one system at a time.

N red alerts arrive in one burst. Each is for a different station in a different township, so
each is its own warning group. A webhook receiver (in this process) records when each station's
first notification arrives.

- **Alertmanager** is Debian's ``prometheus-alertmanager``; this benchmark installs it with apt
  when it is missing. Settings: ``group_by: [station]``, ``group_wait: 0s``, clustering off,
  state in a temporary directory. The alerts are POSTed to ``/api/v2/alerts`` in parts of 500.
- **Qianshao alerting** runs as its own process. Settings: group wait and interval 0, storm mode
  and inhibition off, and a webhook subscription for all regions. The events are produced on
  ``risk.events.v1`` in one send (``alerts.v1`` is published too, as in a deployment).

Before each burst, both systems get one warm-up alert, so the Kafka consumer group and
Alertmanager's dispatcher are already running. The clock starts when the burst starts.

Figures:
- alerts/s: N over the time to the last notification;
- p50 and p99 of the per-alert latency;
- the first notification.
Each figure is also given as a ratio to Alertmanager's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiohttp import web

from bench.scratch import (
    alerting_env,
    scratch_database,
    sms_provider_env,
    start_service,
    stop_service,
    wait_http,
)
from services.alerting.app import MIGRATIONS
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import (
    SmsState,
)
from shared.devstack.inprocess import serve
from shared.devstack.procs import free_port
from shared.kafka import EventProducer, ensure_topics

SIZES = tuple(int(n) for n in os.environ.get("QIANSHAO_BENCH_BURST", "2000,10000").split(","))
AM_BIN = "prometheus-alertmanager"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def station(i: int) -> str:
    return f"ST{i:05d}"


def region(i: int) -> str:
    """A township of its own for each station (900 to a county)."""
    return f"{110101 + i // 900:06d}{i % 900 + 1:03d}001"


class Receiver:
    """The webhook both systems notify: the first arrival of each station, on this clock."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self._want = 0
        self._done = asyncio.Event()

    def expect(self, n: int) -> None:
        self.arrived.clear()
        self._want = n
        self._done.clear()

    def _seen(self, stations: list[str]) -> None:
        now = time.perf_counter()
        for s in stations:
            self.arrived.setdefault(s, now)
        if len(self.arrived) >= self._want:
            self._done.set()

    async def alertmanager(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self._seen([a["labels"]["station"] for a in body.get("alerts", [])])
        return web.Response(text="ok")

    async def qianshao(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self._seen(list(body.get("station_ids", [])))
        return web.Response(text="ok")

    async def wait(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._done.wait(), timeout_s)


def figures(arrived: dict[str, float], t0: float, n: int) -> dict[str, float]:
    lat = [t - t0 for t in arrived.values()]
    return {
        "alerts_per_s": n / max(lat),
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "first_ms": min(lat) * 1000,
    }


def ensure_alertmanager() -> str:
    """Debian's Alertmanager, installed with apt the first time."""
    found = shutil.which(AM_BIN, path=f"{os.environ.get('PATH', '')}:/usr/bin")
    if found:
        return found
    root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*root, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", AM_BIN],
        check=True,
        env=env,
    )
    return shutil.which(AM_BIN, path="/usr/bin") or f"/usr/bin/{AM_BIN}"


async def _burst(
    receiver: Receiver, n: int, send: Callable[[int, int], Awaitable[None]]
) -> dict[str, float]:
    """One warm-up alert, then ``n`` in one burst; the burst's figures."""
    receiver.expect(1)
    await send(-1, 0)
    await receiver.wait(120)
    receiver.expect(n)
    t0 = time.perf_counter()
    await send(0, n)
    await receiver.wait(600)
    return figures(receiver.arrived, t0, n)


AM_CONFIG = """route:
  receiver: hook
  group_by: [station]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 4h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook}/am
        send_resolved: false
"""


async def alertmanager(receiver: Receiver, hook: str, sizes: tuple[int, ...]) -> dict[int, Any]:
    binary = ensure_alertmanager()
    out: dict[int, Any] = {}
    for n in sizes:  # a fresh Alertmanager for each size
        port = free_port()
        work = Path(tempfile.mkdtemp(prefix="qianshao-am-"))
        (work / "am.yml").write_text(AM_CONFIG.format(hook=hook), encoding="utf-8")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'am.yml'}",
                f"--storage.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_http(f"{base}/-/ready")
            async with httpx.AsyncClient(timeout=60) as c:
                out[n] = await _burst(receiver, n, _am_sender(c, base))
        finally:
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(work, ignore_errors=True)
    return out


def _am_sender(c: httpx.AsyncClient, base: str) -> Callable[[int, int], Awaitable[None]]:
    async def send(first: int, count: int) -> None:
        now = datetime.now(UTC).isoformat()
        ids = ["WARM"] if first < 0 else [station(i) for i in range(count)]
        docs = [
            {"labels": {"alertname": "flood", "severity": "red", "station": s}, "startsAt": now}
            for s in ids
        ]
        sem = asyncio.Semaphore(4)

        async def post(part: list[dict[str, Any]]) -> None:
            async with sem:
                r = await c.post(f"{base}/api/v2/alerts", json=part)
                r.raise_for_status()

        await asyncio.gather(*(post(docs[i : i + 500]) for i in range(0, len(docs), 500)))

    return send


def _service_env(
    dsn: str, bootstrap: str, prefix: str, port: int, sms: str | None = None
) -> dict[str, str]:
    p = "QIANSHAO_ALERTING_"
    providers = sms_provider_env(sms) if sms is not None else {}
    return {
        **providers,
        **alerting_env(dsn, bootstrap, prefix, port),
        f"{p}GROUP_WAIT_S": "0",
        f"{p}GROUP_INTERVAL_S": "0",
        f"{p}STORM_LIMIT": "0",
        f"{p}INHIBIT_RULES": "[]",
        f"{p}FEED_NOTICES": "false",
    }


def _event(prefix: str, i: int, at: datetime) -> bytes:
    s, r = ("WARM", "110101999001") if i < 0 else (station(i), region(i))
    return orjson.dumps(
        {
            "event_id": f"{prefix}-{s}",
            "produced_at": at.isoformat(),
            "scope": "station",
            "station_id": s,
            "region_code": r,
            "hazard": "flood",
            "rule_id": "threshold:water_level",
            "previous_level": "none",
            "level": "red",
            "change": "raised",
            "event_time": at.isoformat(),
            "evidence": {"rule_id": "threshold:water_level", "metric": "water_level", "value": 9},
        }
    )


async def qianshao(
    admin_dsn: str,
    bootstrap: str,
    receiver: Receiver,
    hook: str,
    sizes: tuple[int, ...],
    *,
    fan_out: bool = False,
) -> dict[int, Any]:
    """A fresh database and service for each size, as Alertmanager's state is fresh."""
    return {
        n: await _qianshao_burst(admin_dsn, bootstrap, receiver, hook, n, fan_out=fan_out)
        for n in sizes
    }


def phone(i: int, k: int) -> str:
    return f"139{i:05d}{k}00"


class SmsWatch:
    """The stand-in SMS providers in this process; when each station's three people have their
    message."""

    def __init__(self) -> None:
        self.state = SmsState(keep=100, on_text=self._text)
        self._want = 0
        self.done = asyncio.Event()

    def expect(self, messages: int) -> None:
        self._want = messages
        self.done.clear()

    def _text(self, _entry: dict[str, Any]) -> None:
        if len(self.state.log) >= self._want:  # numbers that had a message
            self.done.set()

    def arrived(self, n: int, t0_wall: datetime, t0: float) -> dict[str, float]:
        """Per station, on the ``perf_counter`` clock: when the last of its people got it."""
        out: dict[str, float] = {}
        for i in range(n):
            times = [self.state.log[phone(i, k)][0][4] for k in range(3)]
            out[station(i)] = t0 + (max(times) - t0_wall).total_seconds()
        return out


async def _qianshao_burst(
    admin_dsn: str,
    bootstrap: str,
    receiver: Receiver,
    hook: str,
    n: int,
    *,
    fan_out: bool = False,
) -> dict[str, float]:
    prefix = f"burst{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    await ensure_topics(bootstrap, topics.all())
    port = free_port()
    watch = SmsWatch()
    async with (
        scratch_database(admin_dsn, "burst") as dsn,
        serve(fake_app(sms=watch.state)) as sms,
    ):
        pool = await create_pool(dsn, max_size=2)
        producer = await EventProducer.start(bootstrap)
        proc = None
        try:
            await migrate(pool, "alerting", MIGRATIONS)
            await pool.execute(
                """INSERT INTO alerting.subscriptions (name, channel, target, region_prefix)
                   VALUES ('receiver', 'webhook', $1, '')""",
                f"{hook}/qianshao",
            )
            if fan_out:
                await _people(pool, n)
            env = _service_env(dsn, bootstrap, prefix, port, sms if fan_out else None)
            proc = start_service("alerting", env)
            await wait_http(f"http://127.0.0.1:{port}/readyz")

            async def send(first: int, count: int) -> None:
                at = datetime.now(UTC)
                ids = [-1] if first < 0 else list(range(count))
                items = [(station(i) if i >= 0 else "warm", _event(prefix, i, at)) for i in ids]
                await producer.send_many(topics.risk_events, items)

            if not fan_out:
                return await _burst(receiver, n, send)
            receiver.expect(1)
            await send(-1, 0)
            await receiver.wait(120)
            watch.expect(3 * n)
            t0_wall, t0 = datetime.now(UTC), time.perf_counter()
            await send(0, n)
            await asyncio.wait_for(watch.done.wait(), 900)
            return figures(watch.arrived(n, t0_wall, t0), t0, n)
        finally:
            if proc is not None:
                stop_service(proc)
            await producer.stop()
            await pool.close()


async def _people(pool: asyncpg.Pool, n: int) -> None:
    """Three village cadres in each station's township, by SMS (no subscription: SMS is what a
    person gets by default); each must confirm a red warning (叫应)."""
    rows = [
        (f"村干部{i}-{k}", "village_cadre", region(i), region(i), phone(i, k))
        for i in range(n)
        for k in range(3)
    ]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "persons",
            schema_name="alerting",
            records=rows,
            columns=["name", "role", "region_code", "jurisdiction", "phone"],
        )


async def run(admin_dsn: str, bootstrap: str) -> dict[str, float]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/am", receiver.alertmanager)
    app.router.add_post("/qianshao", receiver.qianshao)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hook = f"http://127.0.0.1:{port}"
    try:
        am = await alertmanager(receiver, hook, SIZES)
        qs = await qianshao(admin_dsn, bootstrap, receiver, hook, SIZES)
        fan = await qianshao(admin_dsn, bootstrap, receiver, hook, SIZES, fan_out=True)
    finally:
        await runner.cleanup()
    res: dict[str, float] = {}
    for n in SIZES:
        for system, figs in (("alertmanager", am[n]), ("qianshao", qs[n]), ("fanout", fan[n])):
            for k, v in figs.items():
                res[f"{system}_{n}_{k}"] = v
    _print(res)
    return res


def _print(res: dict[str, float]) -> None:
    print("## Alerting burst, side by side with Alertmanager")
    print()
    print(
        "N red alerts at once, each its own group (a station in a township of its own), one "
        "webhook receiver; one system at a time (`python -m bench --only burst`). Ratios are "
        "Qianshao's figure over Alertmanager's (throughput: higher is better; times: lower)."
    )
    print()
    print("| N | system | alerts/s | p50 | p99 | first notification |")
    print("|---|---|---|---|---|---|")
    for n in SIZES:
        for system in ("alertmanager", "qianshao", "fanout"):
            g = {
                k: res[f"{system}_{n}_{k}"]
                for k in ("alerts_per_s", "p50_ms", "p99_ms", "first_ms")
            }
            print(
                f"| {n:,} | {system} | {g['alerts_per_s']:,.0f} | {g['p50_ms']:,.0f} ms | "
                f"{g['p99_ms']:,.0f} ms | {g['first_ms']:,.0f} ms |"
            )
        a = {
            k: res[f"alertmanager_{n}_{k}"]
            for k in ("alerts_per_s", "p50_ms", "p99_ms", "first_ms")
        }
        q = {k: res[f"qianshao_{n}_{k}"] for k in ("alerts_per_s", "p50_ms", "p99_ms", "first_ms")}
        print(
            f"| {n:,} | ratio | {q['alerts_per_s'] / a['alerts_per_s']:.3f}× | "
            f"{q['p50_ms'] / a['p50_ms']:.1f}× | {q['p99_ms'] / a['p99_ms']:.1f}× | "
            f"{q['first_ms'] / max(a['first_ms'], 0.001):.1f}× |"
        )
        f = {k: res[f"fanout_{n}_{k}"] for k in ("alerts_per_s", "p50_ms", "p99_ms", "first_ms")}
        print(
            f"| {n:,} | fan-out ratio | {f['alerts_per_s'] / a['alerts_per_s']:.3f}× | "
            f"{f['p50_ms'] / a['p50_ms']:.1f}× | {f['p99_ms'] / a['p99_ms']:.1f}× | "
            f"{f['first_ms'] / max(a['first_ms'], 0.001):.1f}× |"
        )
    print()
    print(
        "`fanout` is the same burst with three village cadres in each township, each by SMS "
        "through the stand-in providers (Tencent, Aliyun) and each bound to confirm (叫应): "
        "3·N messages; a station's time is when the last of its three people had it."
    )
