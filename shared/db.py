"""PostgreSQL adapters: the asyncpg pool, the migration runner, TimescaleDB detection and native
time partitioning for when TimescaleDB is absent.

Migrations live in ``services/<service>/migrations/NNNN_name.sql``. A migration that must differ
between the two storage paths comes as a pair, ``NNNN_name.timescale.sql`` and
``NNNN_name.native.sql``; the runner applies the one that fits the database it finds. Each service
has its own schema and records what it applied in ``<schema>.schema_migrations``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from shared.errors import DatabaseError

log = logging.getLogger(__name__)

Pool = asyncpg.Pool
# a connection, or one lent by a pool
Conn = asyncpg.Connection | PoolConnectionProxy

# the driver's errors that say the database is out of reach for now, not that a statement is
# wrong: a consumer retries its batch after one (shared.errors.is_unavailable)
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def columns(rows: Sequence[Sequence[Any]], n: int) -> list[list[Any]]:
    """The ``n`` columns of ``rows`` as lists: the arrays of an ``unnest($1, $2, …)``."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(n)]


def ident(name: str) -> str:
    """Check a SQL identifier we build statements with (schema and table names are ours)."""
    for part in name.split("."):
        if not _IDENT.match(part):
            raise ValueError(f"not a safe identifier: {name!r}")
    return name


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    attempts: int = 30,
    delay_s: float = 0.5,
) -> asyncpg.Pool:
    """Open a pool, waiting for the database to accept connections (it may still be starting)."""
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                reset=_keep_session,
                command_timeout=60,
            )
            assert pool is not None
            return pool
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            last = exc
            log.info("database not reachable yet", extra={"attempt": attempt, "error": repr(exc)})
            await asyncio.sleep(delay_s)
    raise DatabaseError(f"database unreachable after {attempts} attempts: {last!r}") from last


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes through on its way back to the pool, after asyncpg's own clean-up
    (an open transaction is rolled back). The default also sends a reset query (unlock advisory
    locks, close cursors, UNLISTEN, RESET ALL) on every release: a round trip and server work
    for state Qianshao never leaves on a pooled connection, since its advisory locks and temp
    tables are all transaction-scoped and it sets no session settings."""


async def ping(pool: asyncpg.Pool) -> None:
    try:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"database unreachable: {exc!r}") from exc


# ---------------------------------------------------------------------------------------------
# TimescaleDB detection

StorageMode = Literal["timescale", "native"]


async def detect_storage(conn: Conn, prefer: str = "auto") -> StorageMode:
    """``timescale`` when TimescaleDB is preloaded with its community features (compression,
    continuous aggregates and their policies: what the timescale migrations use); otherwise
    ``native``, with a warning that says why and what to set.

    ``prefer="native"`` forces the fallback (tests of that path); ``"timescale"`` makes the
    absence of TimescaleDB an error that says the same.
    """
    if prefer == "native":
        return "native"
    why = await timescale_unusable(conn)
    if why is None:
        try:
            async with conn.transaction():
                # services starting together on a new database would race on the catalogue
                # (a duplicate-key error for the second); one creates it, the others see it
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('qianshao:timescaledb'))")
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return "timescale"
        except asyncpg.PostgresError as exc:
            why = f"CREATE EXTENSION timescaledb failed: {exc}"
    if prefer == "timescale":
        raise DatabaseError(f"TimescaleDB was required: {why}")
    log.warning("readings are stored with native partitioning", extra={"reason": why})
    return "native"


async def timescale_unusable(conn: Conn) -> str | None:
    """Why TimescaleDB cannot serve here, or None when it can. Asked before ``CREATE EXTENSION``:
    when the library is installed but not preloaded, that statement fails and the server drops
    the connection with it."""
    available = await conn.fetchval(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if not available:
        return "TimescaleDB is not installed in this PostgreSQL"
    preloaded = await conn.fetchval(
        """SELECT 'timescaledb' = ANY(regexp_split_to_array(
                      current_setting('shared_preload_libraries'), '\\s*,\\s*'))"""
    )
    if not preloaded:
        return (
            "TimescaleDB is installed but not loaded: add it to shared_preload_libraries "
            "(shared_preload_libraries = 'timescaledb' in postgresql.conf) and restart PostgreSQL"
        )
    licence = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    if licence == "apache":
        return (
            "this TimescaleDB is the Apache-only build (timescaledb.license = 'apache'): it has "
            "no compression, continuous aggregates or policies, which the timescale path uses; "
            "set timescaledb.license = 'timescale' to use them"
        )
    return None


# ---------------------------------------------------------------------------------------------
# migrations


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path


def discover(directory: Path, mode: StorageMode) -> list[Migration]:
    chosen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        stem = path.name[:-4]
        variant = None
        if stem.endswith(".timescale") or stem.endswith(".native"):
            stem, variant = stem.rsplit(".", 1)
        if variant is not None and variant != mode:
            continue
        if stem in chosen:
            raise ValueError(f"two migrations named {stem} in {directory}")
        chosen[stem] = path
    return [Migration(v, p) for v, p in sorted(chosen.items())]


class MigrationChanged(DatabaseError):
    """An applied migration's file is not what was applied: a schema is never migrated twice
    differently. Restore the file, and write the change as a new migration."""

    retriable = False


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def migrate(
    pool: asyncpg.Pool, schema: str, directory: Path, *, storage: str = "auto"
) -> StorageMode:
    """Apply the service's pending migrations, once, even with several replicas starting at
    once, and record each one's checksum. A schema keeps the storage path it was first migrated
    with. An applied migration whose file has changed since is refused (:class:`MigrationChanged`)
    before anything is applied."""
    ident(schema)
    async with pool.acquire() as conn:
        detected = await detect_storage(conn, storage)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                        version text PRIMARY KEY,
                        storage text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            await conn.execute(
                f"ALTER TABLE {schema}.schema_migrations ADD COLUMN IF NOT EXISTS checksum text"
            )
            applied = {
                r["version"]: (r["storage"], r["checksum"])
                for r in await conn.fetch(
                    f"SELECT version, storage, checksum FROM {schema}.schema_migrations"
                )
            }
            mode: StorageMode = detected
            if applied:
                first = min(applied)
                mode = "timescale" if applied[first][0] == "timescale" else "native"
                if mode != detected and storage == "auto":
                    log.warning(
                        "the schema keeps the storage it was migrated with",
                        extra={"schema": schema, "storage": mode, "detected": detected},
                    )
            for m in discover(directory, mode):
                digest = checksum(m.path)
                if m.version in applied:
                    recorded = applied[m.version][1]
                    if recorded is None:  # applied before checksums were kept
                        await conn.execute(
                            f"UPDATE {schema}.schema_migrations SET checksum = $2 "
                            "WHERE version = $1",
                            m.version,
                            digest,
                        )
                    elif recorded != digest:
                        raise MigrationChanged(
                            f"migration {m.path.name} of {schema} changed after it was applied "
                            f"(checksum {recorded[:12]}… applied, {digest[:12]}… now): restore "
                            "the file and write the change as a new migration"
                        )
                    continue
                log.info("applying migration", extra={"schema": schema, "version": m.version})
                await conn.execute(m.path.read_text(encoding="utf-8"))
                await conn.execute(
                    f"""INSERT INTO {schema}.schema_migrations (version, storage, checksum)
                        VALUES ($1, $2, $3)""",
                    m.version,
                    mode,
                    digest,
                )
    return mode


async def storage_mode(pool: asyncpg.Pool, schema: str) -> StorageMode:
    """The storage path the schema was migrated with."""
    value = await pool.fetchval(
        f"SELECT storage FROM {ident(schema)}.schema_migrations ORDER BY version LIMIT 1"
    )
    return "timescale" if value == "timescale" else "native"


async def describe_storage(pool: asyncpg.Pool, schema: str) -> str:
    """Where the schema's readings are stored, in words, for the person starting the stack."""
    if await storage_mode(pool, schema) == "timescale":
        version = await pool.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        )
        return (
            f"TimescaleDB {version} (hypertables; compression, retention and "
            "continuous-aggregate policies run as its background jobs)"
        )
    async with pool.acquire() as conn:
        why = await timescale_unusable(conn)
    return "native partitioning" + (f" ({why})" if why else "")


# ---------------------------------------------------------------------------------------------
# native partitioning (the fallback when TimescaleDB is absent)


def day_start(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


class DailyPartitions:
    """Creates one partition per UTC day of a range-partitioned table, on demand, and drops the
    ones that fall out of retention. Creation is serialised by an advisory lock so that several
    writers can ask for the same day at once."""

    def __init__(self, table: str) -> None:
        self.table = ident(table)
        self._known: set[date] = set()

    def partition_name(self, day: date) -> str:
        return f"{self.table}_p{day:%Y%m%d}"

    async def ensure(self, conn: Conn, days: Iterable[date]) -> None:
        missing = sorted(set(days) - self._known)
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"part:{self.table}")
            for day in missing:
                lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
                hi = lo + timedelta(days=1)
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.partition_name(day)} "
                    f"PARTITION OF {self.table} FOR VALUES FROM ('{lo.isoformat()}') "
                    f"TO ('{hi.isoformat()}')"
                )
        self._known.update(missing)

    def forget(self) -> None:
        """Forget which partitions exist (another process may have dropped some)."""
        self._known.clear()

    async def drop_before(self, conn: Conn, cutoff: date) -> list[str]:
        """Drop whole partitions whose day ends on or before ``cutoff``; return their names."""
        schema, _, name = self.table.rpartition(".")
        rows = await conn.fetch(
            """SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 JOIN pg_namespace n ON n.oid = p.relnamespace
                WHERE p.relname = $1 AND n.nspname = $2""",
            name,
            schema or "public",
        )
        dropped = []
        for r in rows:
            m = re.search(r"_p(\d{8})$", r["relname"])
            if not m:
                continue
            day = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC).date()
            if day < cutoff:
                full = f"{schema}.{r['relname']}" if schema else r["relname"]
                await conn.execute(f"DROP TABLE IF EXISTS {ident(full)}")
                self._known.discard(day)
                dropped.append(full)
        return dropped


def record_to_dict(record: Any) -> dict[str, Any]:
    return dict(record.items())
