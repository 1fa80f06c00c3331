"""Fault injection on the whole pipeline, with the books checked afterwards.

``python -m bench.chaos`` (``make chaos``) runs ingest, risk and alerting as processes on a
PostgreSQL and a broker of its own, with the stand-in SMS providers. A steady push of water
levels from a township's stations goes in, and the stations cross their red line and fall back
again and again, so warnings are issued, updated and cancelled to the township's village cadres
all the time. Meanwhile:

- ingest, risk and alerting are each killed with SIGKILL ``rounds`` times at random moments and
  restarted;
- PostgreSQL is stopped and started again;
- the first SMS provider goes down, later it turns slow.

The pusher retries a batch until it is answered 202; nothing else helps the services recover.
When the load ends and the pipeline is quiet, the books are checked:

- every reading answered 202 is stored exactly once;
- each station's level in risk is the one its last reading implies;
- every dispatched warning version has one SMS row per cadre, all sent, and the providers
  received exactly as many messages per number as the ledger sent it: none lost, none doubled;
- the township's open warning has the level of its highest station.

Finally (full run only) the broker is restarted. The local broker keeps messages in memory, so
the run reports what the restart lost. ``tests/e2e/test_chaos.py`` runs the short form in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from shared.devstack.broker import TansuBroker
from shared.devstack.fakeproviders import create_app as fake_app
from shared.devstack.fakesms import (
    ALIYUN_KEY_ID,
    ALIYUN_SECRET,
    TENCENT_SECRET_ID,
    TENCENT_SECRET_KEY,
    SmsState,
)
from shared.devstack.inprocess import serve
from shared.devstack.postgres import PostgresServer
from shared.devstack.procs import free_port, terminate
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET

TOWNSHIP = "110101001"
PERIOD_S = 6  # the stations rise above their red line together, one period in two
RED, CALM = 4.9, 1.0
THRESHOLDS = {
    "water_level": {"blue": 3.0, "yellow": 3.5, "orange": 4.0, "red": 4.6, "hazard": "flood"}
}


@dataclass
class Plan:
    stations: int = 20
    tick_s: float = 0.1  # one reading per station per tick
    seconds: float = 45.0
    rounds: int = 1  # SIGKILLs per service
    postgres_restart: bool = True
    sms_faults: bool = True
    broker_restart: bool = False
    seed: int = 20261124


@dataclass
class Books:
    accepted: int = 0
    stored: int = 0
    conflicts: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    postgres_restarts: int = 0
    versions: int = 0
    dispatched: int = 0
    sms_rows: int = 0
    sms_sent: int = 0
    provider_messages: int = 0
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.lost and not self.doubled


def level_of(value: float) -> int:
    t = THRESHOLDS["water_level"]
    return sum(value >= t[k] for k in ("blue", "yellow", "orange", "red"))  # type: ignore[operator]


def value_at(station: int, t: float) -> float:
    # one station lags a little behind the others: the warning is updated, not only issued
    lag = 1 if station == 0 else 0
    return RED if ((int(t) - lag) // PERIOD_S) % 2 == 0 else CALM


class Pipeline:
    """The three services as processes, restartable, and what they need."""

    def __init__(self, work: Path, pg: PostgresServer, broker: TansuBroker, fake: str) -> None:
        self.work = work
        self.pg = pg
        self.broker = broker
        self.fake = fake
        self.ports = {s: free_port() for s in ("ingest", "risk", "alerting")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def env(self, service: str) -> dict[str, str]:
        p = f"QIANSHAO_{service.upper()}_"
        common = {
            "DATABASE_URL": self.pg.dsn,
            "KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "TOPIC_PREFIX": "chaos.",
            "PORT": str(self.ports[service]),
            "LOG_LEVEL": "ERROR",
        }
        extra: dict[str, str] = {
            "ingest": {"STORAGE": "native", "HEALTH_SWEEP_S": "0"},
            "risk": {"NODATA_SWEEP_S": "0", "OUTBOX_POLL_S": "0.2"},
            "alerting": {
                "GROUP_INTERVAL_S": "0",
                "FLAP_THRESHOLD": "100000",
                "STORM_LIMIT": "0",
                "DELIVERY_POLL_S": "0.05",
                "LEASE_S": "3",
                "AMBIGUOUS_WAIT_S": "1",
                "RETRY_BASE_S": "0.2",
                "RETRY_CAP_S": "2",
                "SMS_FAILOVER_COOLDOWN_S": "3",
                "ALIYUN_ENDPOINT": f"{self.fake}/aliyun/",
                "ALIYUN_ACCESS_KEY_ID": ALIYUN_KEY_ID,
                "ALIYUN_ACCESS_KEY_SECRET": ALIYUN_SECRET,
                "ALIYUN_TEMPLATE_CODE": "SMS_CHAOS",
                "TENCENT_ENDPOINT": f"{self.fake}/tencent/",
                "TENCENT_SECRET_ID": TENCENT_SECRET_ID,
                "TENCENT_SECRET_KEY": TENCENT_SECRET_KEY,
                "TENCENT_SDK_APP_ID": "1400000002",
                "TENCENT_TEMPLATE_ID": "100002",
            },
        }[service]
        return {**os.environ, **{p + k: v for k, v in {**common, **extra}.items()}}

    def start(self, service: str) -> None:
        log = open(self.work / f"{service}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "serve", service],
            env=self.env(service),
            stdout=log,
            stderr=log,
        )

    def kill(self, service: str) -> None:
        proc = self.procs[service]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def ready(self, service: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as c:
            while time.monotonic() < deadline:
                if self.procs[service].poll() is not None:
                    self.start(service)  # it died while a dependency was away: start it again
                try:
                    if (await c.get(f"{self.url(service)}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{service} not ready")

    async def start_all(self) -> None:
        for service in ("ingest", "risk", "alerting"):
            self.start(service)
            await self.ready(service)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                terminate(proc)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (OSError, asyncpg.PostgresError):
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


async def run(plan: Plan, work: Path) -> Books:
    books = Books()
    rnd = random.Random(plan.seed)
    pg = PostgresServer(work / "pgdata").start()
    broker = TansuBroker(work / "broker").start()
    sms = SmsState()
    started = time.monotonic()
    try:
        async with serve(fake_app(sms=sms)) as fake:
            pipe = Pipeline(work, pg, broker, fake)
            try:
                await pipe.start_all()
                await _setup(pipe, plan)
                expected = await _load_with_faults(pipe, plan, rnd, sms, books)
                await _check_books(pipe, plan, sms, books, expected)
                if plan.broker_restart:
                    await _broker_restart(pipe, plan, books)
            finally:
                pipe.stop_all()
    finally:
        broker.stop()
        pg.stop()
        books.seconds = time.monotonic() - started
    return books


def identity_headers() -> dict[str, str]:
    ident = Identity(subject="chaos", kind="operator", roles=["admin"])
    return {"X-Qianshao-Identity": sign(ident, DEV_INTERNAL_SECRET, datetime.now(UTC), 7200)}


async def _setup(pipe: Pipeline, plan: Plan) -> None:
    async with httpx.AsyncClient(base_url=pipe.url("ingest"), headers=identity_headers()) as c:
        for i in range(plan.stations):
            r = await c.post(
                "/v1/stations",
                json={
                    "id": f"CH{i:03d}",
                    "name": f"水位站{i}",
                    "kind": "water_level",
                    "region_code": f"{TOWNSHIP}{i + 1:03d}",
                    "lat": 39.9,
                    "lon": 116.4,
                    "interval_s": 60,
                    "attributes": {"thresholds": THRESHOLDS},
                },
            )
            r.raise_for_status()
    conn = await asyncpg.connect(pipe.pg.dsn)
    try:
        await conn.execute(
            """INSERT INTO alerting.persons (name, role, region_code, jurisdiction, phone)
               SELECT '村干部' || i, 'village_cadre', r, r, (13700000000 + i)::text
                 FROM generate_series(1, $1) AS i,
                      LATERAL (SELECT $2 || lpad(i::text, 3, '0')) AS x(r)""",
            plan.stations,
            TOWNSHIP,
        )
    finally:
        await conn.close()


async def _load_with_faults(
    pipe: Pipeline, plan: Plan, rnd: random.Random, sms: SmsState, books: Books
) -> dict[str, float]:
    """Push for ``plan.seconds`` while the faults land; the last value sent per station."""
    last: dict[str, float] = {}
    stop = asyncio.Event()

    async def push() -> None:
        t0 = time.time()
        tick = 0
        async with httpx.AsyncClient(
            base_url=pipe.url("ingest"), headers=identity_headers(), timeout=10
        ) as c:
            while not stop.is_set():
                at = t0 + tick * plan.tick_s
                await asyncio.sleep(max(0.0, at - time.time()))
                ts = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
                readings = [
                    {
                        "station_id": f"CH{i:03d}",
                        "metric": "water_level",
                        "unit": "m",
                        "ts": ts,
                        "value": value_at(i, at),
                    }
                    for i in range(plan.stations)
                ]
                while True:  # the same batch again until it is accepted
                    try:
                        r = await c.post(
                            "/v1/readings", json={"source": "chaos", "readings": readings}
                        )
                        if r.status_code == 202 and r.json()["accepted"] == len(readings):
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.2)
                books.accepted += len(readings)
                for x in readings:
                    last[str(x["station_id"])] = float(x["value"])  # type: ignore[arg-type]
                tick += 1

    async def faults() -> None:
        services = ["ingest", "risk", "alerting"] * plan.rounds
        rnd.shuffle(services)
        cases: list[tuple[str, Any]] = [("kill", s) for s in services]
        if plan.postgres_restart:
            cases.insert(len(cases) // 2, ("postgres", None))
        if plan.sms_faults:
            cases.insert(len(cases) // 3, ("sms-down", None))
            cases.insert(2 * len(cases) // 3, ("sms-slow", None))
        gap = plan.seconds / (len(cases) + 1)
        for kind, arg in cases:
            await asyncio.sleep(rnd.uniform(0.5 * gap, 1.0 * gap))
            if kind == "kill":
                pipe.kill(arg)
                books.kills[arg] = books.kills.get(arg, 0) + 1
                pipe.start(arg)
                await pipe.ready(arg)
            elif kind == "postgres":
                pipe.pg.stop()
                await asyncio.sleep(2)
                pipe.pg.start()
                books.postgres_restarts += 1
                for s in ("ingest", "risk", "alerting"):
                    await pipe.ready(s)
            elif kind == "sms-down":
                sms.aliyun.down = True
                await asyncio.sleep(3)
                sms.aliyun.down = False
            elif kind == "sms-slow":
                sms.aliyun.slow_s = 0.5
                await asyncio.sleep(3)
                sms.aliyun.slow_s = 0.0

    pushing = asyncio.create_task(push())
    try:
        await asyncio.gather(faults(), asyncio.sleep(plan.seconds))
    finally:
        stop.set()
        await pushing
    return last


async def _check_books(
    pipe: Pipeline, plan: Plan, sms: SmsState, books: Books, last: dict[str, float]
) -> None:
    conn = await asyncpg.connect(pipe.pg.dsn)
    try:

        async def stored() -> bool:
            books.stored = await conn.fetchval("SELECT count(*) FROM ingest.readings")
            return bool(books.stored >= books.accepted)

        try:
            await _eventually(stored, 180, "every accepted reading stored")
        except TimeoutError:
            books.lost.append(
                f"readings: {books.accepted} accepted, {books.stored} stored after 180 s"
            )
            return

        async def risk_settled() -> bool:
            rows = await conn.fetch(
                """SELECT station_id, max(level) AS level FROM risk.rule_state
                    GROUP BY station_id"""
            )
            levels = {r["station_id"]: r["level"] for r in rows}
            return all(levels.get(s, 0) == level_of(v) for s, v in last.items())

        await _eventually(risk_settled, 120, "risk levels settled on the last readings")

        top = max(level_of(v) for v in last.values())

        async def alerting_settled() -> bool:
            open_level = await conn.fetchval(
                """SELECT max(level) FROM alerting.warnings
                    WHERE state IN ('issued', 'updated') AND hazard = 'flood'"""
            )
            busy = await conn.fetchval(
                """SELECT count(*) FROM alerting.deliveries
                    WHERE state IN ('pending', 'sending')"""
            )
            scheduled = await conn.fetchval(
                "SELECT count(*) FROM alerting.warning_versions WHERE dispatch = 'scheduled'"
            )
            return (open_level or 0) == top and busy == 0 and scheduled == 0

        await _eventually(alerting_settled, 180, "alerting settled and every SMS out")
        books.stored = await conn.fetchval("SELECT count(*) FROM ingest.readings")
        books.conflicts = await conn.fetchval("SELECT count(*) FROM ingest.reading_conflicts")
        if books.stored != books.accepted:
            books.lost.append(f"readings: {books.accepted} accepted, {books.stored} stored")
        if books.conflicts:
            books.doubled.append(f"readings: {books.conflicts} stored twice with other values")
        books.versions = await conn.fetchval("SELECT count(*) FROM alerting.warning_versions")
        per_version = await conn.fetch(
            """SELECT v.warning_id, v.version,
                      count(d.id) AS rows, count(d.id) FILTER (WHERE d.state = 'sent') AS sent
                 FROM alerting.warning_versions v
                 LEFT JOIN alerting.deliveries d
                   ON d.warning_id = v.warning_id AND d.version = v.version
                  AND d.purpose = 'warning' AND d.channel = 'sms'
                WHERE v.dispatch = 'dispatched'
                GROUP BY 1, 2"""
        )
        books.dispatched = len(per_version)
        people = plan.stations
        for r in per_version:
            if r["rows"] != people or r["sent"] != people:
                books.lost.append(
                    f"{r['warning_id']} v{r['version']}: {r['sent']}/{r['rows']} of {people} sent"
                )
        ledger = await conn.fetch(
            """SELECT target, count(*) AS n FROM alerting.deliveries
                WHERE channel = 'sms' AND state = 'sent' GROUP BY target"""
        )
        books.sms_rows = await conn.fetchval(
            "SELECT count(*) FROM alerting.deliveries WHERE channel = 'sms'"
        )
        books.sms_sent = sum(r["n"] for r in ledger)
        received = sms.per_number()
        books.provider_messages = sum(received.values())
        for r in ledger:
            got = received.get(r["target"], 0)
            if got > r["n"]:
                books.doubled.append(f"{r['target']}: {got} received, {r['n']} sent")
            elif got < r["n"]:
                books.lost.append(f"{r['target']}: {got} received, {r['n']} sent")
        if books.dispatched == 0:
            books.lost.append("no warning version was dispatched: the load raised nothing")
    finally:
        await conn.close()


async def _broker_restart(pipe: Pipeline, plan: Plan, books: Books) -> None:
    """Restart the broker while readings flow, and report what the in-memory broker lost."""
    conn = await asyncpg.connect(pipe.pg.dsn)
    try:
        before = await conn.fetchval("SELECT count(*) FROM ingest.readings")
        applied_before = await conn.fetchval(
            'SELECT coalesce(sum("offset"), 0) FROM risk.applied_offsets'
        )
        pipe.broker.stop()
        await asyncio.sleep(2)
        pipe.broker.start()
        for s in ("ingest", "risk", "alerting"):
            await pipe.ready(s, timeout_s=120)
        async with httpx.AsyncClient(base_url=pipe.url("ingest"), headers=identity_headers()) as c:
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            r = await c.post(
                "/v1/readings",
                json={
                    "source": "chaos",
                    "readings": [
                        {
                            "station_id": "CH000",
                            "metric": "water_level",
                            "unit": "m",
                            "ts": now,
                            "value": RED,
                        }
                    ],
                },
            )
            ok = r.status_code == 202
        after = before
        for _ in range(60):  # the consumer stores it, if it reads the new log at all
            after = await conn.fetchval("SELECT count(*) FROM ingest.readings")
            if after > before:
                break
            await asyncio.sleep(0.5)
        books.notes.append(
            f"broker restart: the services reconnected by themselves; a push afterwards was "
            f"{'answered 202' if ok else 'refused'}, and within 30 s {after - before} new row(s) "
            f"were stored (ingest's committed offsets lie beyond the restarted broker's empty "
            f"logs until they reset). Messages "
            f"the in-memory broker held and no consumer had committed are gone (risk had applied "
            f"offsets summing to {applied_before} before; the restarted broker starts its logs "
            f"at 0). Apache Kafka under Strimzi keeps them on replicated persistent volumes "
            f"(3 replicas, min.insync.replicas 2, acks=all), so a broker restart there loses "
            f"nothing."
        )
    finally:
        await conn.close()


def report(plan: Plan, books: Books) -> str:
    kills = ", ".join(f"{k} ×{v}" for k, v in sorted(books.kills.items()))
    lines = [
        f"- {plan.stations} stations, one reading each per {plan.tick_s:g} s "
        f"({plan.stations / plan.tick_s:,.0f} readings/s) for {plan.seconds:g} s; "
        f"SIGKILL: {kills}; PostgreSQL restarts: {books.postgres_restarts}; SMS provider down "
        f"and slow: {'yes' if plan.sms_faults else 'no'}; {books.seconds:.0f} s in all",
        f"- readings: {books.accepted:,} accepted with 202, {books.stored:,} stored, "
        f"{books.conflicts} conflicts",
        f"- warning versions: {books.versions}, dispatched {books.dispatched}; SMS ledger rows "
        f"{books.sms_rows:,}, sent {books.sms_sent:,}; messages the providers received "
        f"{books.provider_messages:,}",
        f"- lost: {len(books.lost)}; doubled: {len(books.doubled)}",
        *[f"  - lost: {x}" for x in books.lost[:20]],
        *[f"  - doubled: {x}" for x in books.doubled[:20]],
        *[f"- {n}" for n in books.notes],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the CI form: one kill each")
    args = parser.parse_args(argv)
    plan = (
        Plan()
        if args.short
        else Plan(stations=50, tick_s=0.05, seconds=240, rounds=10, broker_restart=True)
    )
    work = Path(tempfile.mkdtemp(prefix="qianshao-chaos-"))
    books = asyncio.run(run(plan, work))
    print("## Fault injection (the books after the run)")
    print(report(plan, books))
    if books.clean:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    print(f"the services' logs are kept in {work}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
