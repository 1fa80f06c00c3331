"""Station plans for risk: the rule packs applied to each station of ``ingest.stations`` (ingest's
published read model), with region overrides from ``risk.overrides``; cached for a short time."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import asyncpg

from services.risk.domain.packs import Pack, shipped_packs
from services.risk.domain.stations import StationInfo, build_info

STATION_COLUMNS = "id, kind, region_code, interval_s, attributes, maintenance"
_BY_ID = f"SELECT {STATION_COLUMNS} FROM ingest.stations WHERE id = ANY($1::text[])"  # noqa: S608
_IN_REGION = f"SELECT {STATION_COLUMNS} FROM ingest.stations WHERE region_code LIKE $1 || '%'"  # noqa: S608


class StationPlans:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        packs: Mapping[str, Pack] | None = None,
        ttl_s: float = 30.0,
        tolerance_s: float = 3600.0,
    ) -> None:
        self._pool = pool
        self._packs = list((packs if packs is not None else shipped_packs()).values())
        self._ttl = ttl_s
        self._tolerance = tolerance_s
        self._entries: dict[str, tuple[float, StationInfo | None]] = {}

    def invalidate(self) -> None:
        self._entries.clear()

    async def get_many(self, ids: Iterable[str]) -> dict[str, StationInfo]:
        now = time.monotonic()
        out: dict[str, StationInfo] = {}
        missing = []
        for sid in set(ids):
            e = self._entries.get(sid)
            if e is not None and e[0] > now:
                if e[1] is not None:
                    out[sid] = e[1]
            else:
                missing.append(sid)
        if missing:
            rows = await self._pool.fetch(_BY_ID, missing)
            overrides = await self._overrides()
            seen = set()
            for r in rows:
                seen.add(r["id"])
                info = build_info(dict(r), self._packs, overrides, self._tolerance)
                out[info.station_id] = info
                self._entries[info.station_id] = (now + self._ttl, info)
            for sid in missing:
                if sid not in seen:  # unknown to ingest: no rules; look again soon
                    self._entries[sid] = (now + min(self._ttl, 2.0), None)
        return out

    async def in_region(self, prefix: str) -> list[StationInfo]:
        rows = await self._pool.fetch(_IN_REGION, prefix)
        overrides = await self._overrides()
        return [build_info(dict(r), self._packs, overrides, self._tolerance) for r in rows]

    async def _overrides(self) -> list[tuple[str, str, str, float]]:
        rows = await self._pool.fetch(
            "SELECT region_prefix, rule_id, level, value FROM risk.overrides"
        )
        return [(r["region_prefix"], r["rule_id"], r["level"], r["value"]) for r in rows]
