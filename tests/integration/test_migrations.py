"""The migration runner: each migration applied once and its checksum kept; an applied
migration whose file changed is refused, before anything else is applied; a schema keeps the
storage path it was first migrated with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.ingest.app import MIGRATIONS
from shared.db import MigrationChanged, checksum, create_pool, migrate


def write(d: Path, name: str, sql: str) -> None:
    (d / name).write_text(sql, encoding="utf-8")


async def test_an_applied_migration_that_changed_is_refused(database, tmp_path):
    write(tmp_path, "0001_a.sql", "CREATE TABLE demo.a (id int);")
    pool = await create_pool(database)
    try:
        await migrate(pool, "demo", tmp_path, storage="native")
        kept = await pool.fetch("SELECT version, checksum FROM demo.schema_migrations")
        assert [(r["version"], r["checksum"]) for r in kept] == [
            ("0001_a", checksum(tmp_path / "0001_a.sql"))
        ]
        write(tmp_path, "0001_a.sql", "CREATE TABLE demo.a (id bigint);")  # edited in place
        write(tmp_path, "0002_b.sql", "CREATE TABLE demo.b (id int);")
        with pytest.raises(MigrationChanged, match=r"0001_a\.sql of demo changed"):
            await migrate(pool, "demo", tmp_path, storage="native")
        assert await pool.fetchval("SELECT to_regclass('demo.b')") is None  # nothing applied
        write(tmp_path, "0001_a.sql", "CREATE TABLE demo.a (id int);")  # restored
        await migrate(pool, "demo", tmp_path, storage="native")
        assert await pool.fetchval("SELECT to_regclass('demo.b')") is not None
    finally:
        await pool.close()


async def test_checksums_are_filled_in_for_migrations_applied_before_them(database):
    pool = await create_pool(database)
    try:
        await migrate(pool, "ingest", MIGRATIONS)
        await pool.execute("UPDATE ingest.schema_migrations SET checksum = NULL")
        await migrate(pool, "ingest", MIGRATIONS)
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM ingest.schema_migrations WHERE checksum IS NULL"
            )
            == 0
        )
    finally:
        await pool.close()


async def test_a_schema_keeps_the_storage_it_was_first_migrated_with(database, tmp_path):
    shutil.copytree(MIGRATIONS, tmp_path / "m")
    pool = await create_pool(database)
    try:
        assert await migrate(pool, "ingest", tmp_path / "m", storage="native") == "native"
        # TimescaleDB is there, but the schema's tables are native partitions
        assert await migrate(pool, "ingest", tmp_path / "m") == "native"
    finally:
        await pool.close()
