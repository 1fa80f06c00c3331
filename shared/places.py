"""Places in words: a 12-digit division code named as a person reads it ("五通桥区竹根镇").

``ingest.divisions`` holds the codes and names (a published read model, loaded by ``qianshao
divisions load``); every service that writes a text, a CAP document or a map reads names through
``Places``. A code the registry does not know is kept as it is and flagged, never guessed.

The code's five levels are its prefixes: province (2 digits), city (4), county (6), township (9)
and village (12), each padded with zeros to 12 digits."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from shared.db import Conn

LEVELS = ("province", "city", "county", "township", "village")
PREFIX = (2, 4, 6, 9, 12)
# names the statistics use for a city level that is no place of its own
PLACEHOLDERS = frozenset({"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"})


def chain(code: str) -> list[str]:
    """The codes of each level down to the place, province first (each once: a county's code
    is also its own township-level and village-level padding)."""
    out: list[str] = []
    for n in PREFIX:
        c = code[:n].ljust(12, "0")
        if c not in out:
            out.append(c)
    return out


@dataclass(frozen=True)
class Place:
    code: str
    name: str  # in words, or the code itself when the registry does not know it
    known: bool
    level: str | None = None  # province … village, when known

    @property
    def area_desc(self) -> str:
        """CAP ``areaDesc``: the name, or the code said to be one."""
        return self.name if self.known else f"行政区划代码 {self.code}"


def compose(code: str, names: Mapping[str, tuple[str, int]]) -> Place:
    """The place of ``code`` from the registry's rows of its chain (code → (name, level)).

    A county is named with its city (乐山市五通桥区), a township with its county (五通桥区竹根镇),
    a village with its county and township; a city with its province."""
    own = names.get(code)
    if own is None:
        return Place(code, code, False)
    name, level = own
    by_level = {lvl: n for c, (n, lvl) in names.items() if c in chain(code)}
    if level == 5:
        parts = [by_level.get(3), by_level.get(4), name]
    elif level == 4:
        parts = [by_level.get(3), name]
    elif level == 3:
        parts = [by_level.get(2), name]
    elif level == 2:
        parts = [by_level.get(1), name]
    else:
        parts = [name]
    words = "".join(p for p in parts if p and p not in PLACEHOLDERS)
    return Place(code, words or name, True, LEVELS[level - 1])


class PlaceNames(Protocol):
    async def describe(self, code: str, conn: Conn | None = None) -> Place: ...

    async def describe_many(
        self, codes: Iterable[str], conn: Conn | None = None
    ) -> dict[str, Place]: ...


class Places:
    """Names of codes from ``ingest.divisions``, kept for ``ttl_s`` (names change with a new
    edition, a few times a year)."""

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = 3600.0) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, Place]] = {}
        self._registry = False

    async def describe(self, code: str, conn: Conn | None = None) -> Place:
        """``conn``: read on the caller's connection (inside its transaction) rather than take
        another from the pool."""
        return (await self.describe_many([code], conn))[code]

    async def describe_many(
        self, codes: Iterable[str], conn: Conn | None = None
    ) -> dict[str, Place]:
        now = time.monotonic()
        out: dict[str, Place] = {}
        wanted: list[str] = []
        for code in codes:
            hit = self._cache.get(code)
            if hit is not None and hit[0] > now:
                out[code] = hit[1]
            elif code not in wanted:
                wanted.append(code)
        if wanted:
            rows = await self._rows({c for code in wanted for c in chain(code)}, conn)
            for code in wanted:
                place = compose(code, rows)
                # an unknown code is asked again soon: the registry may be loading
                ttl = self._ttl if place.known else min(self._ttl, 60.0)
                self._cache[code] = (now + ttl, place)
                out[code] = place
        return out

    def forget(self) -> None:
        self._cache.clear()

    async def _rows(self, codes: Iterable[str], conn: Conn | None) -> dict[str, tuple[str, int]]:
        db: Conn | asyncpg.Pool = conn if conn is not None else self._pool
        if not self._registry:
            # a database ingest has not migrated (a test of one service): no names, no error,
            # and the caller's transaction untouched
            self._registry = bool(
                await db.fetchval("SELECT to_regclass('ingest.divisions') IS NOT NULL")
            )
            if not self._registry:
                return {}
        rows: Sequence[asyncpg.Record] = await db.fetch(
            "SELECT code, name, level FROM ingest.divisions WHERE code = ANY($1::text[])",
            list(codes),
        )
        return {r["code"]: (r["name"], r["level"]) for r in rows}
