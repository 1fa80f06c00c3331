"""What is in and around a warning's area, and the online-monitoring KPI, on real PostGIS through
ingest's API: a school inside the polygon, a shelter outside it serving it (listed, or by its
radius), the nearest teams in order with their distance, a depot's stock, the plans that apply;
an enterprise with no sensor counted against the KPI."""

from __future__ import annotations

import math
from datetime import timedelta

import httpx
import pytest

from services.ingest.adapters import atlas as repo
from services.ingest.app import create_app
from services.ingest.domain.atlas.records import Record, parse_record
from services.ingest.domain.atlas.registries import REGISTRIES
from shared.db import create_pool
from shared.devstack.inprocess import serve
from tests.helpers import identity_header, ingest_settings

TOWN_A, TOWN_B, COUNTY = "511112101000", "511112102000", "511112000000"


def admin() -> dict[str, str]:
    """An admin's signed identity, made when asked: it expires a minute after signing."""
    return identity_header(subject="admin1")


# the warning's polygon: a square of 0.03° around 竹根镇's centre (lat 29.40–29.43)
POLYGON = "29.40,103.80 29.40,103.83 29.43,103.83 29.43,103.80 29.40,103.80"


def km_east(km: float, lat: float = 29.415) -> float:
    """The longitude ``km`` east of the polygon's east edge (103.83) at ``lat``."""
    return 103.83 + km / (111.32 * math.cos(math.radians(lat)))


def rec(kind: str, **values: object) -> Record:
    parsed = parse_record(REGISTRIES[kind], values)
    assert isinstance(parsed, Record), parsed
    return parsed


async def seed(pool) -> None:
    async def put(kind: str, *records: Record) -> None:
        await repo.store(pool, REGISTRIES[kind], list(records), actor="seed", via="test")

    base = {"region_code": TOWN_A}
    await put(
        "targets",
        rec(
            "targets",
            id="TG-1",
            name="竹根镇中心小学",
            lon=103.815,
            lat=29.415,
            target_type="school",
            population=800,
            **base,
        ),
        rec(
            "targets",
            id="TG-2",
            name="敬老院",
            lon=103.9,
            lat=29.5,
            target_type="nursing_home",
            population=60,
            region_code=TOWN_B,
        ),
    )
    await put(
        "hazard_sites",
        rec(
            "hazard_sites",
            id="HS-1",
            name="后山滑坡",
            lon=103.81,
            lat=29.42,
            site_type="landslide",
            households=12,
            persons=41,
            **base,
        ),
    )
    await put(
        "shelters",
        rec(
            "shelters",
            id="SH-IN",
            name="镇政府广场",
            lon=103.82,
            lat=29.42,
            capacity_persons=300,
            is_open=True,
            **base,
        ),
        rec(
            "shelters",
            id="SH-LISTED",
            name="石岗村小学操场",
            lon=103.90,
            lat=29.47,
            capacity_persons=500,
            area_m2=900,
            is_open=False,
            serves=TOWN_A,
            region_code=TOWN_B,
        ),
        rec(
            "shelters",
            id="SH-RADIUS",
            name="河滨公园",
            lon=km_east(0.5),
            lat=29.415,
            capacity_persons=200,
            is_open=True,
            region_code=TOWN_B,
        ),
        rec(
            "shelters",
            id="SH-FAR",
            name="外县体育场",
            lon=km_east(20),
            lat=29.415,
            capacity_persons=5000,
            is_open=True,
            region_code="511113101000",
        ),
    )
    await put(
        "teams",
        *(
            rec(
                "teams",
                id=f"TM-{km}",
                name=f"救援队{km}",
                lon=km_east(km),
                lat=29.415,
                team_type="flood",
                members=20,
                on_call_name="值班",
                on_call_phone="13800000000",
                region_code=TOWN_B,
            )
            for km in (2, 5, 30)
        ),
    )
    await put(
        "depots",
        rec("depots", id="DP-1", name="区级储备库", lon=km_east(3), lat=29.415, region_code=TOWN_B),
    )
    await put(
        "stock",
        rec("stock", depot_id="DP-1", item="救生衣", quantity=500, unit="件"),
        rec("stock", depot_id="DP-1", item="冲锋舟", quantity=4, unit="艘"),
    )
    await put(
        "plans",
        rec(
            "plans",
            id="PL-FLOOD",
            name="区防汛预案",
            region_code=COUNTY,
            hazard="flood",
            response_level="IV",
        ),
        rec("plans", id="PL-ALL", name="区总体预案", region_code=COUNTY, hazard="comprehensive"),
        rec("plans", id="PL-TOWN", name="竹根镇防汛预案", region_code=TOWN_A, hazard="flood"),
        rec("plans", id="PL-FIRE", name="区森林火灾预案", region_code=COUNTY, hazard="forest_fire"),
        rec(
            "plans", id="PL-OTHER", name="邻县防汛预案", region_code="511113000000", hazard="flood"
        ),
    )


@pytest.fixture
async def stack(database, broker, topic_prefix):
    settings = ingest_settings(database, broker, topic_prefix, health_sweep_s=0)
    app = create_app(settings)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as c:
        pool = await create_pool(database)
        try:
            yield c, pool, app
        finally:
            await pool.close()


async def test_a_warnings_polygon_and_what_is_around_it(stack):
    c, pool, _ = stack
    await seed(pool)
    body = {"regions": [TOWN_A], "polygon": POLYGON, "hazard": "flood", "nearest": 2}
    r = await c.post("/v1/atlas/surroundings", json=body, headers=admin())
    assert r.status_code == 200, r.text
    got = r.json()
    assert [t["id"] for t in got["targets"]] == ["TG-1"]  # the nursing home is outside
    assert [s["id"] for s in got["hazard_sites"]] == ["HS-1"]
    serving = {s["id"]: s["serves_by"] for s in got["shelters"]}
    assert serving == {"SH-IN": "inside", "SH-LISTED": "listed", "SH-RADIUS": "radius"}
    listed = next(s for s in got["shelters"] if s["id"] == "SH-LISTED")
    assert listed["effective_capacity"] == 500  # 900 m² at 1.5 m² a person: 600 ≥ 500
    assert got["summary"] == {
        "targets": 1,
        "population_in_targets": 800,
        "persons_threatened": 41,
        "people": 841,
        "shelter_capacity": 1000,
        "shelter_capacity_open": 500,
        "shortfall": 0,
        "covered": 1.0,
    }
    assert [t["id"] for t in got["teams"]] == ["TM-2", "TM-5"]
    assert got["teams"][0]["distance_m"] == pytest.approx(2000, rel=0.02)
    assert got["teams"][1]["distance_m"] == pytest.approx(5000, rel=0.02)
    (depot,) = got["depots"][:1]
    assert depot["distance_m"] == pytest.approx(3000, rel=0.02)
    assert depot["stock"] == [
        {"item": "冲锋舟", "quantity": 4, "unit": "艘"},
        {"item": "救生衣", "quantity": 500, "unit": "件"},
    ]
    # the township's own plan first, then the county's flood and comprehensive plans
    assert [p["id"] for p in got["plans"]] == ["PL-TOWN", "PL-FLOOD", "PL-ALL"]

    r = await c.post(
        "/v1/atlas/surroundings", params={"format": "geojson"}, json=body, headers=admin()
    )
    assert r.headers["content-type"] == "application/geo+json"
    features = r.json()["features"]
    assert features[0]["properties"] == {"layer": "area"}
    assert features[0]["geometry"]["type"] == "Polygon"
    layers = {(f["properties"]["layer"], f["id"]) for f in features[1:]}
    assert ("targets", "targets/TG-1") in layers
    assert ("shelters", "shelters/SH-RADIUS") in layers
    assert ("depots", "depots/DP-1") in layers


async def test_a_region_alone_and_the_scope(stack):
    c, pool, _ = stack
    await seed(pool)
    r = await c.get(f"/v1/atlas/regions/{TOWN_A}/surroundings", headers=admin())
    got = r.json()
    assert {t["id"] for t in got["targets"]} == {"TG-1"}
    assert got["area"]["distances_from"] == "regions"
    # distances from the township's footprint (its school, site and shelter): TM-2 is nearest
    assert got["teams"][0]["id"] == "TM-2"
    assert {p["id"] for p in got["plans"]} == {"PL-TOWN", "PL-FLOOD", "PL-ALL", "PL-FIRE"}
    town_b_officer = identity_header(
        roles=["viewer"], scopes=["atlas:read"], region_prefix="511112102"
    )
    r = await c.get(f"/v1/atlas/regions/{TOWN_A}/surroundings", headers=town_b_officer)
    assert r.status_code == 403
    r = await c.post("/v1/atlas/surroundings", json={"polygon": "1,2 3"}, headers=admin())
    assert r.status_code == 422
    assert "polygon" in r.json()["detail"]


async def test_the_kpi_counts_enterprises_and_lists_those_offline(stack):
    c, pool, app = stack
    now = app.state.clock.now()

    def ent(eid_prefix: str, name: str, region: str, sector: str, required: bool) -> Record:
        from services.ingest.domain.atlas.checks import uscc_check_char

        eid = eid_prefix + uscc_check_char(eid_prefix)
        return rec(
            "enterprises",
            id=eid,
            name=name,
            region_code=region,
            lon=103.8,
            lat=29.4,
            sector=sector,
            monitoring_required=required,
        )

    e_none = ent("91511112MA0000001", "无传感器化工", TOWN_A, "hazchem_use", True)
    e_up = ent("91511112MA0000002", "在线化工", TOWN_A, "hazchem_use", True)
    e_down = ent("91511112MA0000003", "离线煤矿", TOWN_B, "coal_mine", True)
    e_free = ent("91511112MA0000004", "无需监测", TOWN_B, "other", False)
    await repo.store(
        pool, REGISTRIES["enterprises"], [e_none, e_up, e_down, e_free], actor="t", via="t"
    )
    await pool.executemany(
        """INSERT INTO ingest.stations (id, name, kind, region_code, owner_enterprise, interval_s)
           VALUES ($1, $1, 'combustible_gas', $2, $3, 60)""",
        [("G-UP1", TOWN_A, e_up.key), ("G-UP2", TOWN_A, e_up.key), ("G-DOWN", TOWN_B, e_down.key)],
    )
    await pool.executemany(
        "INSERT INTO ingest.station_health (station_id, last_seen) VALUES ($1, $2)",
        [
            ("G-UP1", now - timedelta(seconds=30)),
            ("G-UP2", now - timedelta(hours=1)),
            ("G-DOWN", now - timedelta(hours=2)),
        ],
    )
    r = await c.get("/v1/atlas/kpi/online-monitoring", params={"by": "township"}, headers=admin())
    got = r.json()
    assert (got["required"], got["online"], got["target"]) == (3, 1, 0.85)
    assert got["rate"] == pytest.approx(1 / 3)
    assert got["below_target"] is True
    assert [(g["group"], g["required"], g["online"]) for g in got["groups"]] == [
        (TOWN_A, 2, 1),
        (TOWN_B, 1, 0),
    ]
    offline = {o["id"]: (o["reason"], o["stations"]) for o in got["offline"]}
    assert offline == {e_none.key: ("no_station", 0), e_down.key: ("offline", 1)}
    down = next(o for o in got["offline"] if o["id"] == e_down.key)
    assert down["last_seen"].startswith((now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    r = await c.get("/v1/atlas/kpi/online-monitoring", params={"by": "sector"}, headers=admin())
    assert [(g["group"], g["name"], g["rate"]) for g in r.json()["groups"]] == [
        ("coal_mine", "煤矿", 0.0),
        ("hazchem_use", "危险化学品使用", 0.5),
    ]
