"""Which storage a database gets, on real servers: TimescaleDB when it is preloaded, and
otherwise native partitions with the reason said — including a TimescaleDB installed but not in
``shared_preload_libraries``, where ``CREATE EXTENSION`` would fail and the server drop the
connection (the state right after installing the package)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from services.ingest.app import MIGRATIONS
from shared.db import create_pool, describe_storage, detect_storage, migrate
from shared.devstack.postgres import PostgresServer
from shared.errors import DatabaseError


@pytest.fixture(scope="module")
def apache(workdir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(workdir / "pg-apache", settings={"timescaledb.license": "apache"})
    yield server.start()
    server.stop()


async def test_a_preloaded_timescaledb_is_used(database):
    conn = await asyncpg.connect(database)
    try:
        assert await detect_storage(conn) == "timescale"
        assert await conn.fetchval("SELECT current_setting('timescaledb.license')") == "timescale"
    finally:
        await conn.close()


async def test_installed_but_not_preloaded_falls_back_and_says_what_to_set(plain_database, caplog):
    conn = await asyncpg.connect(plain_database)
    try:
        with caplog.at_level(logging.WARNING, logger="shared.db"):
            assert await detect_storage(conn) == "native"
        [record] = [r for r in caplog.records if r.name == "shared.db"]
        assert "shared_preload_libraries" in record.reason  # type: ignore[attr-defined]
        assert await conn.fetchval("SELECT 1") == 1  # the connection is still there
        with pytest.raises(DatabaseError, match="shared_preload_libraries"):
            await detect_storage(conn, "timescale")
    finally:
        await conn.close()


async def test_the_apache_only_build_has_no_compression_so_native_is_used(apache):
    conn = await asyncpg.connect(apache.dsn)
    try:
        assert await detect_storage(conn) == "native"
        with pytest.raises(DatabaseError, match="Apache-only"):
            await detect_storage(conn, "timescale")
    finally:
        await conn.close()


async def test_the_stack_says_which_storage_it_is_on(database, plain_database):
    """What ``make run`` prints once the ingest schema is migrated."""
    said = {}
    for name, dsn in (("timescale", database), ("plain", plain_database)):
        pool = await create_pool(dsn)
        try:
            await migrate(pool, "ingest", MIGRATIONS)
            said[name] = await describe_storage(pool, "ingest")
        finally:
            await pool.close()
    assert said["timescale"].startswith("TimescaleDB 2.28.3 (hypertables")
    assert said["plain"].startswith("native partitioning (")
    assert "shared_preload_libraries" in said["plain"]
