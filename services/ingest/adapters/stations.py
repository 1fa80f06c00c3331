"""Station registry: the repository (keyword-only functions over a pool) and a read cache."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from services.ingest.domain.validation import StationInfo
from shared.api_types import Flag, Number, Whole
from shared.contracts import JsonObject, RegionCode, StationId
from shared.errors import Conflict, NotFound, ValidationFailed

STATION_KINDS = (
    "rain_gauge",
    "water_level",
    "weather_station",
    "gnss_displacement",
    "crack_meter",
    "combustible_gas",
    "toxic_gas",
    "coal_mine_methane",
    "co",
    "tank_level",
    "tank_temperature",
    "tank_pressure",
    "fire_danger",
    "road_weather",
    "waterlogging",
    "coal_mine_environment",
)


class StationFields(BaseModel):
    """A station's fields, as PUT replaces them (the id is the path's)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    region_code: RegionCode
    lat: Number | None = Field(default=None, ge=-90, le=90)
    lon: Number | None = Field(default=None, ge=-180, le=180)
    owner_enterprise: str | None = Field(default=None, max_length=200)
    interval_s: Whole = Field(default=300, gt=0, le=86400 * 7)
    attributes: JsonObject = Field(default_factory=dict)
    maintenance: Flag = False


class StationIn(StationFields):
    id: StationId


class StationReplace(StationFields):
    """PUT's body: the fields, and the id only as a check (the path names the station)."""

    id: StationId | None = Field(default=None, description="when given, the path's id")


class Station(StationIn):
    model_config = ConfigDict(extra="ignore")


_COLUMNS = (
    "id, name, kind, region_code, lat, lon, owner_enterprise, interval_s, attributes, maintenance"
)


def _station(row: asyncpg.Record) -> Station:
    return Station.model_validate(dict(row.items()))


async def create(pool: asyncpg.Pool, *, station: StationIn) -> Station:
    try:
        row = await pool.fetchrow(
            f"""INSERT INTO ingest.stations ({_COLUMNS})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_COLUMNS}""",
            *_values(station),
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"station {station.id!r} exists already") from exc
    assert row is not None
    return _station(row)


async def replace(pool: asyncpg.Pool, *, station: StationIn) -> Station:
    row = await pool.fetchrow(
        f"""UPDATE ingest.stations SET name=$2, kind=$3, region_code=$4, lat=$5, lon=$6,
               owner_enterprise=$7, interval_s=$8, attributes=$9, maintenance=$10, updated_at=now()
             WHERE id=$1 RETURNING {_COLUMNS}""",
        *_values(station),
    )
    if row is None:
        raise NotFound(f"no station {station.id!r}")
    return _station(row)


def _values(s: StationIn) -> tuple[Any, ...]:
    return (
        s.id,
        s.name,
        s.kind,
        s.region_code,
        s.lat,
        s.lon,
        s.owner_enterprise,
        s.interval_s,
        s.attributes,
        s.maintenance,
    )


async def get(pool: asyncpg.Pool, *, station_id: str) -> Station:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM ingest.stations WHERE id=$1", station_id)
    if row is None:
        raise NotFound(f"no station {station_id!r}")
    return _station(row)


async def delete(pool: asyncpg.Pool, *, station_id: str) -> None:
    status = await pool.execute("DELETE FROM ingest.stations WHERE id=$1", station_id)
    if status.endswith(" 0"):
        raise NotFound(f"no station {station_id!r}")


async def list_(
    pool: asyncpg.Pool, *, region_prefix: str = "", limit: int = 100, after: str = ""
) -> list[Station]:
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM ingest.stations
             WHERE region_code LIKE $1 || '%' AND id > $2 ORDER BY id LIMIT $3""",
        region_prefix,
        after,
        limit,
    )
    return [_station(r) for r in rows]


class StationCache:
    """Station lookups for the hot path. Entries expire after ``ttl_s``; misses are looked up in
    one query per batch. Unknown ids are cached negatively for the same time."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float = 30.0) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._entries: dict[str, tuple[float, StationInfo | None]] = {}

    def invalidate(self, station_id: str) -> None:
        self._entries.pop(station_id, None)

    async def get_many(self, ids: Iterable[str]) -> dict[str, StationInfo]:
        now = time.monotonic()
        found: dict[str, StationInfo] = {}
        missing: list[str] = []
        for sid in set(ids):
            entry = self._entries.get(sid)
            if entry is not None and entry[0] > now:
                if entry[1] is not None:
                    found[sid] = entry[1]
            else:
                missing.append(sid)
        if missing:
            rows = await self._pool.fetch(
                """SELECT id, kind, region_code, interval_s, attributes, maintenance
                     FROM ingest.stations WHERE id = ANY($1::text[])""",
                missing,
            )
            for r in rows:
                info = StationInfo(
                    id=r["id"],
                    kind=r["kind"],
                    region_code=r["region_code"],
                    interval_s=r["interval_s"],
                    attributes=r["attributes"],
                    maintenance=r["maintenance"],
                )
                found[info.id] = info
            # unknown ids are remembered briefly only: a station registered on another replica
            # must start being accepted quickly
            for sid in missing:
                maybe = found.get(sid)
                ttl = self._ttl if maybe is not None else min(self._ttl, 2.0)
                self._entries[sid] = (now + ttl, maybe)
        return found


# -- sources that may register stations ---------------------------------------------------------

# the kind of station a metric usually comes from, for stations registered without one
KIND_OF_METRIC = {
    "rainfall": "rain_gauge",
    "water_level": "water_level",
    "temperature": "weather_station",
    "wind_speed": "weather_station",
    "wind_gust": "weather_station",
    "displacement": "gnss_displacement",
    "crack_width": "crack_meter",
    "combustible_gas": "combustible_gas",
    "toxic_gas": "toxic_gas",
    "ch4": "coal_mine_methane",
    "snowfall": "weather_station",
    "ground_temperature": "weather_station",
    "road_surface_temperature": "road_weather",
    "visibility": "weather_station",
    "drought_index": "weather_station",
    "waterlogging_depth": "waterlogging",
    "co": "co",
    "tank_level": "tank_level",
    "tank_temperature": "tank_temperature",
    "tank_pressure": "tank_pressure",
    "fire_danger": "fire_danger",
}


class SourceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        # a source that registers its new stations must say where they are
        json_schema_extra={
            "if": {"properties": {"auto_register": {"const": True}}, "required": ["auto_register"]},
            "then": {
                "required": ["region_code"],
                "properties": {"region_code": {"type": "string"}},
            },
        },
    )
    auto_register: Flag = False
    region_code: RegionCode | None = None
    station_kind: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$")
    interval_s: Whole = Field(default=300, gt=0, le=86400 * 7)


class Source(SourceIn):
    id: str


async def put_source(pool: asyncpg.Pool, *, source_id: str, source: SourceIn) -> Source:
    if source.auto_register and source.region_code is None:
        raise ValidationFailed("a source that registers stations needs a region_code")
    row = await pool.fetchrow(
        """INSERT INTO ingest.sources (id, auto_register, region_code, station_kind, interval_s)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (id) DO UPDATE SET auto_register = EXCLUDED.auto_register,
               region_code = EXCLUDED.region_code, station_kind = EXCLUDED.station_kind,
               interval_s = EXCLUDED.interval_s, updated_at = now()
           RETURNING id, auto_register, region_code, station_kind, interval_s""",
        source_id,
        source.auto_register,
        source.region_code,
        source.station_kind,
        source.interval_s,
    )
    assert row is not None  # an upsert returns its row
    return Source(**dict(row))


async def list_sources(pool: asyncpg.Pool) -> list[Source]:
    rows = await pool.fetch(
        """SELECT id, auto_register, region_code, station_kind, interval_s
             FROM ingest.sources ORDER BY id"""
    )
    return [Source(**dict(r)) for r in rows]


async def auto_register(
    pool: asyncpg.Pool, cache: StationCache, wanted: Iterable[tuple[str, str, str]]
) -> dict[str, StationInfo]:
    """Register the stations (station id, source, metric) whose source may register them; the
    stations that exist afterwards. Idempotent: a station registered meanwhile is kept as is."""
    by_station: dict[str, tuple[str, str]] = {}
    for sid, source, metric in wanted:
        by_station.setdefault(sid, (source, metric))
    if not by_station:
        return {}
    sources = {s for s, _ in by_station.values()}
    rows = await pool.fetch(
        """SELECT id, region_code, station_kind, interval_s FROM ingest.sources
            WHERE id = ANY($1::text[]) AND auto_register""",
        sorted(sources),
    )
    allowed = {r["id"]: r for r in rows}
    new = [(sid, src, metric) for sid, (src, metric) in by_station.items() if src in allowed]
    if not new:
        return {}
    await pool.executemany(
        """INSERT INTO ingest.stations (id, name, kind, region_code, interval_s, attributes)
           VALUES ($1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING""",
        [
            (
                sid,
                allowed[src]["station_kind"] or KIND_OF_METRIC.get(metric, "unknown"),
                allowed[src]["region_code"],
                allowed[src]["interval_s"],
                {"auto_registered_by": src},
            )
            for sid, src, metric in new
        ],
    )
    for sid, _src, _metric in new:
        cache.invalidate(sid)
    return await cache.get_many(sid for sid, _s, _m in new)


async def upsert_many(
    pool: asyncpg.Pool, cache: StationCache, stations: Iterable[StationIn]
) -> int:
    """Registers ``stations`` or updates what their source declares (name, kind, region, owner,
    interval; attributes merged over the ones kept). Where a bureau placed a station (lat, lon)
    and whether it is in maintenance stay as they are. The number written."""
    rows = [_values(s) for s in stations]
    if not rows:
        return 0
    await pool.executemany(
        f"""INSERT INTO ingest.stations ({_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (id) DO UPDATE SET
                name = EXCLUDED.name, kind = EXCLUDED.kind, region_code = EXCLUDED.region_code,
                owner_enterprise = EXCLUDED.owner_enterprise, interval_s = EXCLUDED.interval_s,
                attributes = ingest.stations.attributes || EXCLUDED.attributes,
                updated_at = now()
            WHERE (ingest.stations.name, ingest.stations.kind, ingest.stations.region_code,
                   ingest.stations.owner_enterprise, ingest.stations.interval_s,
                   ingest.stations.attributes || EXCLUDED.attributes)
              IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.kind, EXCLUDED.region_code,
                   EXCLUDED.owner_enterprise, EXCLUDED.interval_s, ingest.stations.attributes)""",
        rows,
    )
    for r in rows:
        cache.invalidate(r[0])
    return len(rows)
