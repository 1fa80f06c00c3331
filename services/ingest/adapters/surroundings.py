"""What is in and around an area (a warning's regions or polygon), on PostGIS:

- **inside**: protection targets with their population, geohazard sites with the persons they
  threaten, enterprises with their major hazard installations — inside the polygon when there is
  one (``ST_Covers``, on the points' GiST index), otherwise within the regions;
- **shelters that serve it**: inside it, listing one of its regions as served, or within their
  service radius (the default radius when none is set) of it — with capacity against the people
  inside;
- **nearest teams and depots** (with their stock): nearest first on the geography index, with
  the distance in metres to the area (0 inside);
- **plans that apply**: of the area's regions or of a region above them, for the hazard when one
  is named (the comprehensive plans always).

Distances are to the polygon, or without one to the convex hull of what is registered in the
regions (stations, targets, sites, enterprises, shelters): the regions' known footprint.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from services.ingest.domain.atlas.area import Area, balance, shelter_capacity
from services.ingest.domain.atlas.checks import region_prefix
from shared.db import Conn
from shared.places import chain

DEFAULT_SERVICE_RADIUS_M = 1000  # an emergency shelter's walk (GB 21734: 0.5–1 km)


# a located record ``t`` as JSON, its point as lon/lat
_VIEW = (
    "(to_jsonb(t) - 'geom' - 'row_hash' - 'created_at' - 'updated_at' - 'updated_by' "
    "|| jsonb_build_object('lon', ST_X(t.geom), 'lat', ST_Y(t.geom)))"
)


def _inside(area: Area) -> str:
    """The condition for a record ``t`` inside the area: $1 the regions' LIKE patterns, $2 the
    polygon."""
    # each form names the other's parameter too, so that both always have a type
    if area.polygon is not None:
        return "(ST_Covers($2::geometry, t.geom) AND cardinality($1::text[]) >= 0)"
    return "(t.region_code LIKE ANY($1::text[]) AND $2::geometry IS NULL)"


async def _rows(conn: Conn, sql: str, *args: object) -> list[dict[str, Any]]:
    return [orjson.loads(r[0]) for r in await conn.fetch(sql, *args)]


async def surroundings(
    pool: asyncpg.Pool,
    area: Area,
    *,
    hazard: str | None = None,
    nearest: int = 5,
    default_radius_m: int = DEFAULT_SERVICE_RADIUS_M,
) -> dict[str, Any]:
    likes, poly = area.prefixes, area.polygon
    inside = _inside(area)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        targets = await _rows(
            conn,
            f"""SELECT {_VIEW}::text FROM atlas.targets t
                 WHERE {inside} ORDER BY t.population DESC, t.id""",  # noqa: S608
            likes,
            poly,
        )
        sites = await _rows(
            conn,
            f"""SELECT {_VIEW}::text FROM atlas.hazard_sites t
                 WHERE {inside} ORDER BY t.persons DESC, t.id""",  # noqa: S608
            likes,
            poly,
        )
        enterprises = await _rows(
            conn,
            f"""SELECT ({_VIEW} || jsonb_build_object('major_hazards',
                        (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                    'id', h.id, 'name', h.name, 'grade', h.grade)
                                    ORDER BY h.grade, h.id), '[]'::jsonb)
                           FROM atlas.major_hazards h WHERE h.enterprise_id = t.id)))::text
                  FROM atlas.enterprises t
                 WHERE {inside} ORDER BY t.risk_grade NULLS LAST, t.id""",  # noqa: S608
            likes,
            poly,
        )
        reference: str | None = poly
        if reference is None and likes:
            reference = await conn.fetchval(
                """SELECT ST_AsEWKT(ST_ConvexHull(ST_Collect(g))) FROM (
                       SELECT geom AS g FROM atlas.targets WHERE region_code LIKE ANY($1)
                       UNION ALL SELECT geom FROM atlas.hazard_sites
                                  WHERE region_code LIKE ANY($1)
                       UNION ALL SELECT geom FROM atlas.enterprises
                                  WHERE region_code LIKE ANY($1)
                       UNION ALL SELECT geom FROM atlas.shelters WHERE region_code LIKE ANY($1)
                       UNION ALL SELECT ST_SetSRID(ST_MakePoint(lon, lat), 4326)
                                   FROM ingest.stations
                                  WHERE region_code LIKE ANY($1) AND lat IS NOT NULL) AS x""",
                likes,
            )
        regions = list(area.regions)
        if not regions:  # a polygon alone: the regions of what lies inside it
            regions = sorted({str(x["region_code"]) for x in (*targets, *sites, *enterprises)})
        # the widest service radius bounds the index search; each shelter's own then decides
        widest = await conn.fetchval(
            "SELECT greatest($1::int, max(service_radius_m)) FROM atlas.shelters",
            default_radius_m,
        )
        shelters = await _rows(
            conn,
            f"""WITH candidates AS (
                    SELECT t.id, 'inside' AS how, 0 AS rank FROM atlas.shelters t WHERE {inside}
                    UNION ALL
                    SELECT s.shelter_id, 'listed', 1 FROM atlas.shelter_serves s
                     WHERE s.region_code = ANY($4::text[]) OR s.region_code LIKE ANY($5::text[])
                    UNION ALL
                    SELECT t.id, 'radius', 2 FROM atlas.shelters t
                     WHERE ST_DWithin(t.geom::geography, $3::geography, $7)
                       AND ST_DWithin(t.geom::geography, $3::geography,
                                      coalesce(t.service_radius_m, $6))),
                chosen AS (SELECT DISTINCT ON (id) id, how FROM candidates ORDER BY id, rank)
                SELECT ({_VIEW} || jsonb_build_object(
                        'distance_m', round(ST_Distance(t.geom::geography, $3::geography)),
                        'serves_by', c.how))::text
                  FROM chosen c JOIN atlas.shelters t ON t.id = c.id
                 ORDER BY t.geom::geography <-> $3::geography, t.id""",  # noqa: S608
            likes,
            poly,
            reference,
            # served codes that cover the area: its own and those above them (a county's
            # shelter serves its townships) …
            sorted({c for r in regions for c in chain(r)}),
            # … and those inside it (a shelter listed for one village of the township)
            [region_prefix(r) + "%" for r in regions],
            default_radius_m,
            widest,
        )
        teams: list[dict[str, Any]] = []
        depots: list[dict[str, Any]] = []
        if reference is not None:
            teams = await _rows(
                conn,
                f"""SELECT ({_VIEW} || jsonb_build_object(
                            'distance_m', round(ST_Distance(t.geom::geography, $1::geography))
                        ))::text
                      FROM atlas.teams t
                     ORDER BY t.geom::geography <-> $1::geography LIMIT $2""",  # noqa: S608
                reference,
                nearest,
            )
            depots = await _rows(
                conn,
                f"""SELECT ({_VIEW} || jsonb_build_object(
                            'distance_m', round(ST_Distance(t.geom::geography, $1::geography)),
                            'stock', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                          'item', s.item, 'quantity', s.quantity,
                                          'unit', s.unit) ORDER BY s.item), '[]'::jsonb)
                                        FROM atlas.stock s WHERE s.depot_id = t.id)))::text
                      FROM (SELECT * FROM atlas.depots
                             ORDER BY geom::geography <-> $1::geography LIMIT $2) t""",  # noqa: S608
                reference,
                nearest,
            )
        plans = await _rows(
            conn,
            """SELECT (to_jsonb(p) - 'row_hash' - 'created_at' - 'updated_at' - 'updated_by')::text
                 FROM atlas.plans p
                WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) a
                               WHERE a LIKE atlas.region_prefix(p.region_code) || '%'
                                  OR p.region_code LIKE atlas.region_prefix(a) || '%')
                  AND ($2::text IS NULL OR p.hazard IN ($2, 'comprehensive'))
                ORDER BY length(atlas.region_prefix(p.region_code)) DESC, p.hazard = $2 DESC,
                         p.response_level, p.id""",
            regions,
            hazard,
        )
    for s in shelters:
        s["effective_capacity"] = shelter_capacity(int(s["capacity_persons"]), s.get("area_m2"))
    people = sum(int(t["population"]) for t in targets) + sum(int(s["persons"]) for s in sites)
    teams.sort(key=lambda x: (x["distance_m"], x["id"]))
    depots.sort(key=lambda x: (x["distance_m"], x["id"]))
    both = balance(people, sum(int(s["effective_capacity"]) for s in shelters))
    open_ = balance(people, sum(int(s["effective_capacity"]) for s in shelters if s.get("is_open")))
    return {
        "area": {
            "regions": list(area.regions),
            "polygon": poly is not None,
            "distances_from": "polygon" if poly else "regions" if reference else None,
        },
        "targets": targets,
        "hazard_sites": sites,
        "enterprises": enterprises,
        "shelters": shelters,
        "teams": teams,
        "depots": depots,
        "plans": plans,
        "summary": {
            "targets": len(targets),
            "population_in_targets": sum(int(t["population"]) for t in targets),
            "persons_threatened": sum(int(s["persons"]) for s in sites),
            "people": people,
            "shelter_capacity": both.capacity,
            "shelter_capacity_open": open_.capacity,
            "shortfall": both.shortfall,
            "covered": both.covered,
        },
    }


async def area_geojson(pool: asyncpg.Pool, area: Area) -> dict[str, Any] | None:
    if area.polygon is None:
        return None
    text = await pool.fetchval("SELECT ST_AsGeoJSON($1::geometry)", area.polygon)
    result: dict[str, Any] = orjson.loads(text)
    return result
