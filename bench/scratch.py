"""Throw-away databases for one benchmark on the bench's PostgreSQL server, and services as
processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx

from shared.devstack.fakesms import (
    ALIYUN_KEY_ID,
    ALIYUN_SECRET,
    TENCENT_SECRET_ID,
    TENCENT_SECRET_KEY,
)


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str, prefix: str = "bench") -> AsyncIterator[str]:
    """A new, empty database; its DSN. Dropped afterwards, connections or not."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def start_service(service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``qianshao serve <service>`` as a process, with ``env`` over this process's environment.

    With ``QIANSHAO_BENCH_PROFILE`` set to a directory, the service runs under ``py-spy record``
    (collapsed stacks per service start in that directory, written when the service stops
    by :func:`stop_service`)."""
    cmd = [sys.executable, "-m", "shared.cli", "serve", service]
    profile = os.environ.get("QIANSHAO_BENCH_PROFILE")
    if profile:
        out = os.path.join(profile, f"{service}-{uuid.uuid4().hex[:6]}.txt")
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        cmd = [spy, "record", "--rate", "250", "--format", "raw", "-o", out, "--", *cmd]
    return subprocess.Popen(
        cmd,
        start_new_session=bool(profile),
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    """Stop a service :func:`start_service` started; under the profiler, SIGINT to both, so that
    the service stops and the profiler writes what it sampled."""
    if os.environ.get("QIANSHAO_BENCH_PROFILE"):
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.terminate()
    proc.wait(60)


def alerting_env(dsn: str, bootstrap: str, prefix: str, port: int) -> dict[str, str]:
    """alerting's settings for a benchmark: its database, broker, topics and port, quiet logs."""
    p = "QIANSHAO_ALERTING_"
    return {
        f"{p}DATABASE_URL": dsn,
        f"{p}KAFKA_BOOTSTRAP": bootstrap,
        f"{p}TOPIC_PREFIX": prefix,
        f"{p}CONSUMER_GROUP": f"{prefix}alerting",
        f"{p}PORT": str(port),
        f"{p}LOG_LEVEL": "WARNING",
        f"{p}DELIVERY_POLL_S": "0.05",
    }


def sms_provider_env(fake: str) -> dict[str, str]:
    """alerting's settings for the stand-in SMS providers at ``fake`` (Tencent first, then
    Aliyun), with the stand-ins' own credentials."""
    p = "QIANSHAO_ALERTING_"
    return {
        f"{p}SMS_PROVIDERS": '["tencent", "aliyun"]',
        f"{p}TENCENT_ENDPOINT": f"{fake}/tencent/",
        f"{p}TENCENT_SECRET_ID": TENCENT_SECRET_ID,
        f"{p}TENCENT_SECRET_KEY": TENCENT_SECRET_KEY,
        f"{p}TENCENT_SDK_APP_ID": "1400000001",
        f"{p}TENCENT_TEMPLATE_ID": "100001",
        f"{p}ALIYUN_ENDPOINT": f"{fake}/aliyun/",
        f"{p}ALIYUN_ACCESS_KEY_ID": ALIYUN_KEY_ID,
        f"{p}ALIYUN_ACCESS_KEY_SECRET": ALIYUN_SECRET,
        f"{p}ALIYUN_TEMPLATE_CODE": "SMS_0001",
    }


def start_fake_providers(port: int) -> subprocess.Popen[bytes]:
    """The stand-in providers as a process on ``port``, in their bulk mode (no per-message log)."""
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "fake-providers", "--port", str(port), "--bulk"],
        stderr=subprocess.DEVNULL,
    )


async def wait_http(url: str, tries: int = 600) -> None:
    """Until ``url`` answers below 500, every 0.1 s, ``tries`` times at most."""
    async with httpx.AsyncClient(timeout=1) as c:
        for _ in range(tries):
            try:
                if (await c.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)
