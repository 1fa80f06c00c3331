"""一张图: "what is in and around this warning" on PostGIS.

One county's registries: 10,000 enterprises, 100,000 resources (teams, depots, shelters,
geohazard sites: 25,000 each) and 5,000 protection targets, spread over a county of about
50 km × 50 km in 20 townships. Each query is a warning's polygon (a square of 1–4 km on a side,
somewhere in the county) with its township, through the same function the API calls
(``services.ingest.adapters.surroundings.surroundings``): targets and sites inside, enterprises
inside, shelters serving, the five nearest teams and depots, the plans.

Baseline in the same run: the same data and queries in a second database whose spatial (GiST)
indexes are dropped, so every ``ST_Covers``/``ST_DWithin``/nearest-first search reads the table.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import asyncpg

from bench.scratch import scratch_database
from services.ingest.adapters import atlas as repo
from services.ingest.adapters.surroundings import surroundings
from services.ingest.app import ATLAS_MIGRATIONS
from services.ingest.app import MIGRATIONS as INGEST
from services.ingest.domain.atlas.area import Area, cap_polygon
from services.ingest.domain.atlas.records import Record, parse_record
from services.ingest.domain.atlas.registries import REGISTRIES
from shared.db import create_pool, migrate

COUNTY = "511112"
LON0, LAT0, SPAN = 103.55, 29.20, 0.5  # about 48 km × 55 km
TOWNSHIPS = [f"{COUNTY}{100 + t:03d}000" for t in range(1, 21)]
ENTERPRISES, PER_RESOURCE, TARGETS = 10_000, 25_000, 5_000
QUERIES = 200
SECTORS = list(REGISTRIES["enterprises"].field("sector").choices)


def _uscc(n: int) -> str:
    from services.ingest.domain.atlas.checks import uscc_check_char

    head = f"915111{n:011d}"
    return head + uscc_check_char(head)


def _where(rnd: random.Random) -> dict[str, Any]:
    lon, lat = LON0 + rnd.random() * SPAN, LAT0 + rnd.random() * SPAN
    # townships as 4 × 5 strips of the county
    t = min(19, int((lon - LON0) / SPAN * 4) * 5 + int((lat - LAT0) / SPAN * 5))
    return {"lon": round(lon, 6), "lat": round(lat, 6), "region_code": TOWNSHIPS[t]}


def _records(seed: int = 11) -> dict[str, list[Record]]:
    rnd = random.Random(seed)

    def make(kind: str, n: int, fields: Any) -> list[Record]:
        out = []
        for i in range(n):
            parsed = parse_record(REGISTRIES[kind], {**_where(rnd), **fields(i)})
            assert isinstance(parsed, Record), parsed
            out.append(parsed)
        return out

    return {
        "enterprises": make(
            "enterprises",
            ENTERPRISES,
            lambda i: {
                "id": _uscc(i),
                "name": f"企业{i}",
                "sector": SECTORS[i % len(SECTORS)],
                "monitoring_required": i % 3 == 0,
            },
        ),
        "teams": make(
            "teams",
            PER_RESOURCE,
            lambda i: {
                "id": f"TM{i}",
                "name": f"队伍{i}",
                "team_type": "flood",
                "members": 10 + i % 40,
                "on_call_name": "值班",
                "on_call_phone": "13800000000",
            },
        ),
        "depots": make("depots", PER_RESOURCE, lambda i: {"id": f"DP{i}", "name": f"储备点{i}"}),
        "shelters": make(
            "shelters",
            PER_RESOURCE,
            lambda i: {
                "id": f"SH{i}",
                "name": f"避难场所{i}",
                "capacity_persons": 100 + i % 900,
                "is_open": i % 2 == 0,
            },
        ),
        "hazard_sites": make(
            "hazard_sites",
            PER_RESOURCE,
            lambda i: {
                "id": f"HS{i}",
                "name": f"隐患点{i}",
                "site_type": "landslide",
                "persons": i % 60,
            },
        ),
        "targets": make(
            "targets",
            TARGETS,
            lambda i: {
                "id": f"TG{i}",
                "name": f"目标{i}",
                "target_type": "school",
                "population": 50 + i % 1000,
            },
        ),
        "plans": [
            r
            for r in (
                parse_record(
                    REGISTRIES["plans"],
                    {"id": f"PL{t}", "name": f"预案{t}", "region_code": code, "hazard": "flood"},
                )
                for t, code in enumerate([f"{COUNTY}000000", *TOWNSHIPS])
            )
            if isinstance(r, Record)
        ],
    }


def _queries(seed: int = 5) -> list[Area]:
    rnd = random.Random(seed)
    out = []
    for _ in range(QUERIES):
        where = _where(rnd)
        half = (0.5 + rnd.random() * 1.5) / 111.0  # 1–4 km on a side
        lon, lat = where["lon"], where["lat"]
        ring = [
            (lat - half, lon - half),
            (lat - half, lon + half),
            (lat + half, lon + half),
            (lat + half, lon - half),
        ]
        out.append(
            Area((where["region_code"],), cap_polygon(" ".join(f"{a},{b}" for a, b in ring)))
        )
    return out


async def _load(pool: asyncpg.Pool, records: dict[str, list[Record]]) -> None:
    for kind, recs in records.items():
        for i in range(0, len(recs), 5_000):
            await repo.store(
                pool, REGISTRIES[kind], recs[i : i + 5_000], actor="bench", via="bench"
            )
    await pool.execute("ANALYZE")


async def _drop_spatial_indexes(pool: asyncpg.Pool) -> int:
    names = [
        r[0]
        for r in await pool.fetch(
            """SELECT indexname FROM pg_indexes
                WHERE schemaname = 'atlas' AND indexdef LIKE '%USING gist%'"""
        )
    ]
    for n in names:
        await pool.execute(f'DROP INDEX atlas."{n}"')
    await pool.execute("ANALYZE")
    return len(names)


async def _measure(pool: asyncpg.Pool, queries: list[Area]) -> tuple[list[float], int]:
    for area in queries[:10]:  # warm the caches and the plans
        await surroundings(pool, area)
    times, found = [], 0
    for area in queries:
        t0 = time.perf_counter()
        got = await surroundings(pool, area)
        times.append((time.perf_counter() - t0) * 1000)
        found += len(got["targets"]) + len(got["shelters"])
    return times, found


def _pct(times: list[float], p: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[int(p) - 1]


async def run(dsn: str) -> dict[str, float]:
    records = _records()
    queries = _queries()
    results: dict[str, tuple[list[float], int]] = {}
    for label in ("indexed", "no_index"):
        async with scratch_database(dsn, "bench_atlas") as db:
            pool = await create_pool(db, min_size=1, max_size=2)
            try:
                await migrate(pool, "ingest", INGEST, storage="native")
                await migrate(pool, "atlas", ATLAS_MIGRATIONS)
                t0 = time.perf_counter()
                await _load(pool, records)
                load_s = time.perf_counter() - t0
                if label == "no_index":
                    dropped = await _drop_spatial_indexes(pool)
                results[label] = await _measure(pool, queries)
            finally:
                await pool.close()
    with_idx, found = results["indexed"]
    without, found_b = results["no_index"]
    assert found == found_b, "both databases must answer the same"
    total = ENTERPRISES + 4 * PER_RESOURCE + TARGETS
    p50, p99 = _pct(with_idx, 50), _pct(with_idx, 99)
    b50, b99 = _pct(without, 50), _pct(without, 99)
    print(
        f"## 一张图: what is in and around a warning ({total:,} records in one county; "
        f"{QUERIES} polygons of 1–4 km)"
    )
    print()
    print("| | p50 | p99 | ratio to no spatial index (p50 / p99) |")
    print("|---|---|---|---|")
    print(
        f"| GiST indexes (as shipped) | {p50:.1f} ms | {p99:.1f} ms | "
        f"{b50 / p50:.1f}× / {b99 / p99:.1f}× faster |"
    )
    print(f"| baseline: {dropped} spatial indexes dropped | {b50:.1f} ms | {b99:.1f} ms | 1.0× |")
    print()
    print(
        f"Loaded through the import path (`store`, 5,000 records a statement) in {load_s:.1f} s "
        f"({total / load_s:,.0f} records/s). Goal p99 < 100 ms: "
        f"{'met' if p99 < 100 else 'not met'}."
    )
    return {"p50_ms": p50, "p99_ms": p99, "baseline_p50_ms": b50, "baseline_p99_ms": b99}
