"""Station plans for risk: the rule packs applied to each station of ``ingest.stations`` (ingest's
published read model), with region overrides from ``risk.overrides``; cached for a short time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.risk.engine import StationPlan
from services.risk.packs import Pack, rules_for_station, shipped_packs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StationInfo:
    station_id: str
    region_code: str
    kind: str
    interval_s: int
    maintenance: bool
    plan: StationPlan
    problems: tuple[str, ...] = ()


def build_info(
    row: Mapping[str, Any] | asyncpg.Record,
    packs: Iterable[Pack],
    overrides: Iterable[tuple[str, str, str, float]],
    tolerance_s: float,
) -> StationInfo:
    """A station's plan from its row and the region overrides (prefix, rule, level, value) that
    cover its region."""
    region = str(row["region_code"])
    by_prefix: dict[str, dict[str, dict[str, float]]] = {}
    for prefix, rule_id, level, value in overrides:
        if region.startswith(prefix):
            by_prefix.setdefault(prefix, {}).setdefault(rule_id, {})[level] = value
    attributes = row["attributes"] if isinstance(row["attributes"], Mapping) else {}
    rules = rules_for_station(packs, str(row["kind"]), attributes, by_prefix.items())
    if rules.problems:
        log.warning(
            "station rules left out", extra={"station_id": row["id"], "problems": rules.problems}
        )
    return StationInfo(
        station_id=str(row["id"]),
        region_code=region,
        kind=str(row["kind"]),
        interval_s=int(row["interval_s"]),
        maintenance=bool(row["maintenance"]),
        plan=StationPlan.build(rules.rules, tolerance_s=tolerance_s),
        problems=rules.problems,
    )


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
                info = build_info(r, self._packs, overrides, self._tolerance)
                out[info.station_id] = info
                self._entries[info.station_id] = (now + self._ttl, info)
            for sid in missing:
                if sid not in seen:  # unknown to ingest: no rules; look again soon
                    self._entries[sid] = (now + min(self._ttl, 2.0), None)
        return out

    async def in_region(self, prefix: str) -> list[StationInfo]:
        rows = await self._pool.fetch(_IN_REGION, prefix)
        overrides = await self._overrides()
        return [build_info(r, self._packs, overrides, self._tolerance) for r in rows]

    async def _overrides(self) -> list[tuple[str, str, str, float]]:
        rows = await self._pool.fetch(
            "SELECT region_prefix, rule_id, level, value FROM risk.overrides"
        )
        return [(r["region_prefix"], r["rule_id"], r["level"], r["value"]) for r in rows]
