"""Session fixtures: a real PostgreSQL cluster (Debian's package, initdb on a free port) and a real
Tansu broker, started once per test session and torn down afterwards. Every test that needs them
gets its own database and its own topic prefix, so tests never see each other's data."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.devstack.broker import TansuBroker
from shared.devstack.postgres import PostgresServer


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qianshao-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(workdir: Path) -> Iterator[PostgresServer]:
    os.environ.setdefault("QIANSHAO_PG_FAST", "1")
    server = PostgresServer(workdir / "pgdata").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def plain_pg_server(workdir: Path) -> Iterator[PostgresServer]:
    """A second cluster without TimescaleDB loaded (installed or not): what the native
    fallback is for."""
    os.environ.setdefault("QIANSHAO_PG_FAST", "1")
    server = PostgresServer(workdir / "pgdata-plain", timescaledb=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker(workdir: Path) -> Iterator[TansuBroker]:
    b = TansuBroker(workdir / "broker").start()
    yield b
    b.stop()


@pytest.fixture
async def database(pg_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database for one test; its DSN."""
    async with _fresh_database(pg_server) as dsn:
        yield dsn


@pytest.fixture
async def plain_database(plain_pg_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database on the cluster without TimescaleDB; its DSN."""
    async with _fresh_database(plain_pg_server) as dsn:
        yield dsn


@contextlib.asynccontextmanager
async def _fresh_database(pg_server: PostgresServer) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pg_server.dsn.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."
