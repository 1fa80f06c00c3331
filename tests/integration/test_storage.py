"""Migrations and the native-partitioning fallback on the real PostgreSQL (Debian's package has no
TimescaleDB; the TimescaleDB path is tested in test_storage_paths.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from services.ingest.adapters.store import ReadingStore
from services.ingest.app import MIGRATIONS
from services.ingest.domain.rows import Row
from shared.db import (
    DailyPartitions,
    create_pool,
    detect_storage,
    discover,
    migrate,
    storage_mode,
)


async def test_migrations_apply_once_and_fall_back_to_native_partitions(plain_database):
    pool = await create_pool(plain_database)
    try:
        async with pool.acquire() as conn:
            assert await detect_storage(conn, "auto") == "native"
        assert await migrate(pool, "ingest", MIGRATIONS) == "native"
        assert await migrate(pool, "ingest", MIGRATIONS) == "native"  # nothing left to apply
        assert await storage_mode(pool, "ingest") == "native"
        versions = await pool.fetch("SELECT version FROM ingest.schema_migrations ORDER BY 1")
        assert [v["version"] for v in versions] == [
            m.version for m in discover(MIGRATIONS, "native")
        ]
        assert [v["version"] for v in versions][:3] == [
            "0001_stations",
            "0002_readings",
            "0003_rollups",
        ]
        kind = await pool.fetchval(
            "SELECT relkind FROM pg_class WHERE oid = 'ingest.readings'::regclass"
        )
        assert kind == b"p" or kind == "p"  # a partitioned table

        store = ReadingStore(pool, storage="native")
        ts = [datetime(2026, 7, d, 12, tzinfo=UTC) for d in (1, 2, 3)]
        rows = [Row("S", "rainfall", t, 1.0, "mm", "good", (), "src") for t in ts]
        first = await store.write(rows)
        assert len(first.stored) == 3
        again = await store.write([*rows, Row("S", "rainfall", ts[0], 9.0, "mm", "good", (), "x")])
        assert len(again.stored) == 3  # identical repeats count as stored (re-published)
        assert [(r.value, kept) for r, kept in again.conflicts] == [(9.0, 1.0)]
        assert await pool.fetchval("SELECT count(*) FROM ingest.readings") == 3
        assert await pool.fetchval("SELECT count(*) FROM ingest.reading_conflicts") == 1
        parts = await pool.fetch(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'ingest.readings'::regclass ORDER BY 1"""
        )
        assert [p["relname"] for p in parts] == [
            "readings_p20260701",
            "readings_p20260702",
            "readings_p20260703",
        ]

        async with pool.acquire() as conn:
            dropped = await DailyPartitions("ingest.readings").drop_before(conn, date(2026, 7, 3))
        assert sorted(dropped) == ["ingest.readings_p20260701", "ingest.readings_p20260702"]
        assert await pool.fetchval("SELECT count(*) FROM ingest.readings") == 1
        # a store that had seen the dropped days recreates them when data for them comes again
        await store.write([Row("S", "rainfall", ts[0], 1.0, "mm", "good", (), "src")])
    finally:
        await pool.close()
