"""The 一张图's registries on PostGIS: read, store (create / update / leave alone, with the audit
trail), delete. One set of statements serves every registry: the columns come from the registry's
description in ``services.ingest.domain.atlas``, never from a request."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from services.ingest.domain.atlas.records import Action, FieldError, Record, classify
from services.ingest.domain.atlas.registries import Registry
from shared.db import Conn, migrate
from shared.errors import NotFound

log = logging.getLogger(__name__)


async def prepare(pool: asyncpg.Pool, migrations: Path) -> str | None:
    """Migrate the registries' schema when PostGIS is installed in this PostgreSQL; otherwise
    say why not (ingest then serves readings as before, and the 一张图's API answers 503)."""
    available = await pool.fetchval(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'"
    )
    if not available:
        why = (
            "PostGIS is not installed in this PostgreSQL (Debian: apt install "
            "postgresql-<version>-postgis-3); the 一张图's registries are off"
        )
        log.warning(why)
        return why
    await migrate(pool, "atlas", migrations)
    return None


@dataclass(frozen=True)
class Stored:
    created: int
    updated: int
    unchanged: int


class ReferencesMissing(Exception):
    """Records name ids another registry does not hold: nothing was stored."""

    def __init__(self, missing: dict[str, FieldError]) -> None:
        super().__init__(f"{len(missing)} records name ids that are not registered")
        self.missing = missing


def _view(registry: Registry, alias: str = "t") -> str:
    """A record as JSON: its fields (lon/lat from the point), when and by whom it last changed."""
    located = (
        f"|| jsonb_build_object('lon', ST_X({alias}.geom), 'lat', ST_Y({alias}.geom))"
        if registry.located != "none"
        else ""
    )
    return f"(to_jsonb({alias}) - 'geom' - 'row_hash' - 'created_at' {located})::text"


def _key_sql(registry: Registry, alias: str = "t") -> str:
    return " || '/' || ".join(f"{alias}.{k}" for k in registry.key)


def _decode(rows: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
    return [orjson.loads(r[0]) for r in rows]


async def list_(
    pool: asyncpg.Pool,
    registry: Registry,
    *,
    region_prefix: str,
    limit: int,
    after: str = "",
) -> list[dict[str, Any]]:
    """Records in key order, from after the key ``after``, within the region prefix (a registry
    without regions, the stock, is filtered by its depot's)."""
    key = _key_sql(registry)
    if registry.has_region:
        region = "t.region_code LIKE $1 || '%'"
    else:
        region = (
            "EXISTS (SELECT 1 FROM atlas.depots d WHERE d.id = t.depot_id "
            "AND d.region_code LIKE $1 || '%')"
        )
    rows = await pool.fetch(
        f"""SELECT {_view(registry)} FROM atlas.{registry.table} t
             WHERE {region} AND {key} > $2 ORDER BY {key} LIMIT $3""",  # noqa: S608
        region_prefix,
        after,
        limit,
    )
    return _decode(rows)


async def get(pool: asyncpg.Pool, registry: Registry, key: str) -> dict[str, Any]:
    row = await pool.fetchval(
        f"SELECT {_view(registry)} FROM atlas.{registry.table} t "  # noqa: S608
        f"WHERE {_key_sql(registry)} = $1",
        key,
    )
    if row is None:
        raise NotFound(f"{registry.title} {key!r} is not registered")
    result: dict[str, Any] = orjson.loads(row)
    return result


async def region_of(pool: asyncpg.Pool, registry: Registry, key: str) -> str | None:
    """The region a stored record belongs to (the stock's is its depot's), None when absent."""
    if registry.has_region:
        table = f"atlas.{registry.table} t"
        column = "t.region_code"
    else:
        table = "atlas.stock t JOIN atlas.depots d ON d.id = t.depot_id"
        column = "d.region_code"
    value: str | None = await pool.fetchval(
        f"SELECT {column} FROM {table} WHERE {_key_sql(registry)} = $1",  # noqa: S608
        key,
    )
    return value


async def store(
    pool: asyncpg.Pool,
    registry: Registry,
    records: Sequence[Record],
    *,
    actor: str,
    via: str,
) -> Stored:
    """Store the records in one transaction: new ones created, changed ones updated, the same
    ones left alone (their digest is unchanged), each change in the audit trail. A record that
    names an id another registry lacks stops all of it (:class:`ReferencesMissing`)."""
    async with pool.acquire() as conn, conn.transaction():
        # one writer per registry at a time: two imports of overlapping files stay whole
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"atlas:{registry.kind}")
        missing = await _missing_references(conn, registry, records)
        if missing:
            raise ReferencesMissing(missing)
        keys = [r.key for r in records]
        before = {
            r["k"]: (r["row_hash"], r["v"])
            for r in await conn.fetch(
                f"""SELECT {_key_sql(registry)} AS k, t.row_hash, {_view(registry)} AS v
                      FROM atlas.{registry.table} t
                     WHERE {_key_sql(registry)} = ANY($1::text[]) FOR UPDATE""",  # noqa: S608
                keys,
            )
        }
        actions = classify(records, {k: v[0] for k, v in before.items()})
        changed = [r for r in records if actions[r.key] != "unchanged"]
        if changed:
            await _upsert(conn, registry, changed, actor)
            after = await _views(conn, registry, [r.key for r in changed])
            await _audit(
                conn,
                registry,
                [(r.key, actions[r.key], before.get(r.key, (None, None))[1]) for r in changed],
                after,
                actor=actor,
                via=via,
            )
        counts = [a for a in actions.values()]
        return Stored(
            created=counts.count("create"),
            updated=counts.count("update"),
            unchanged=counts.count("unchanged"),
        )


async def delete(pool: asyncpg.Pool, registry: Registry, key: str, *, actor: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchval(
            f"DELETE FROM atlas.{registry.table} t WHERE {_key_sql(registry)} = $1 "  # noqa: S608
            f"RETURNING {_view(registry)}",
            key,
        )
        if row is None:
            raise NotFound(f"{registry.title} {key!r} is not registered")
        await _audit(conn, registry, [(key, "delete", row)], {}, actor=actor, via="api")


async def audit_trail(pool: asyncpg.Pool, registry: Registry, key: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT at, actor, action, via, before, after FROM atlas.audit
            WHERE registry = $1 AND record_id = $2 ORDER BY id""",
        registry.kind,
        key,
    )
    return [
        {
            "at": r["at"],
            "actor": r["actor"],
            "action": r["action"],
            "via": r["via"],
            "before": r["before"],
            "after": r["after"],
        }
        for r in rows
    ]


async def last_changed(pool: asyncpg.Pool, registry: Registry) -> datetime | None:
    value: datetime | None = await pool.fetchval(
        "SELECT max(at) FROM atlas.audit WHERE registry = $1", registry.kind
    )
    return value


# ---------------------------------------------------------------------------------------------


async def _missing_references(
    conn: Conn, registry: Registry, records: Sequence[Record]
) -> dict[str, FieldError]:
    missing: dict[str, FieldError] = {}
    for f in registry.all_fields:
        if f.references is None:
            continue
        named = sorted({str(r.values[f.name]) for r in records})
        known = {
            row[0]
            for row in await conn.fetch(
                f"SELECT id FROM atlas.{f.references} WHERE id = ANY($1::text[])",  # noqa: S608
                named,
            )
        }
        for r in records:
            if str(r.values[f.name]) not in known and r.key not in missing:
                missing[r.key] = FieldError(f.name, f"{r.values[f.name]!r} is not registered")
    return missing


async def _upsert(conn: Conn, registry: Registry, records: Sequence[Record], actor: str) -> None:
    cols = [*registry.columns, "row_hash", "updated_by"]
    payload = [{**r.values, "row_hash": r.digest, "updated_by": actor} for r in records]
    names = ", ".join(cols)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in registry.key)
    await conn.execute(
        f"""INSERT INTO atlas.{registry.table} ({names})
            SELECT {names} FROM jsonb_populate_recordset(NULL::atlas.{registry.table}, $1::jsonb)
            ON CONFLICT ({", ".join(registry.key)})
            DO UPDATE SET {updates}, updated_at = now()""",  # noqa: S608
        payload,
    )


async def _views(conn: Conn, registry: Registry, keys: list[str]) -> dict[str, str]:
    return {
        r[0]: r[1]
        for r in await conn.fetch(
            f"""SELECT {_key_sql(registry)}, {_view(registry)} FROM atlas.{registry.table} t
                 WHERE {_key_sql(registry)} = ANY($1::text[])""",  # noqa: S608
            keys,
        )
    }


async def _audit(
    conn: Conn,
    registry: Registry,
    changes: Sequence[tuple[str, Action | str, str | None]],
    after: dict[str, str],
    *,
    actor: str,
    via: str,
) -> None:
    await conn.execute(
        """INSERT INTO atlas.audit (actor, registry, record_id, action, via, before, after)
           SELECT $1, $2, k, a, $3, b::jsonb, n::jsonb
             FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) AS x(k, a, b, n)""",
        actor,
        registry.kind,
        via,
        [c[0] for c in changes],
        [c[1] for c in changes],
        [c[2] for c in changes],
        [after.get(c[0]) for c in changes],
    )
