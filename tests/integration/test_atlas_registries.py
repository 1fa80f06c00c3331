"""The 一张图's registries through ingest's API on real PostgreSQL with PostGIS: every registry
written and read back (JSON and GeoJSON), the audit trail, CSV and Excel imports that are all or
nothing with row and column named, re-imports that change nothing, exports that import again
unchanged, references between registries, and region scope."""

from __future__ import annotations

import io

import httpx
import pytest
from openpyxl import Workbook, load_workbook

from services.ingest.app import create_app
from services.ingest.domain.atlas.checks import gcj02_to_wgs84
from services.ingest.domain.atlas.registries import REGISTRIES
from shared.devstack.inprocess import serve
from tests.helpers import identity_header, ingest_settings

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ENTERPRISE = "91440300708461136T"
TOWN_A, TOWN_B = "511112101000", "511112102000"

SAMPLES: dict[str, tuple[str, dict[str, object]]] = {
    "enterprises": (
        ENTERPRISE,
        {
            "name": "红星化工有限公司",
            "region_code": TOWN_A,
            "lon": 103.82,
            "lat": 29.41,
            "sector": "hazchem_storage",
            "monitoring_required": True,
            "safety_officer_name": "王安全",
            "safety_officer_phone": "13800001111",
        },
    ),
    "major_hazards": (
        "MH-1",
        {
            "name": "液氯储罐区",
            "region_code": TOWN_A,
            "lon": 103.821,
            "lat": 29.411,
            "enterprise_id": ENTERPRISE,
            "grade": "二级",
        },
    ),
    "teams": (
        "TM-1",
        {
            "name": "五通桥区消防救援大队",
            "region_code": TOWN_A,
            "lon": 103.80,
            "lat": 29.40,
            "team_type": "fire_rescue",
            "members": 45,
            "on_call_name": "值班室",
            "on_call_phone": "0833-3301119",
        },
    ),
    "depots": (
        "DP-1",
        {"name": "区级物资储备库", "region_code": TOWN_A, "lon": 103.79, "lat": 29.39},
    ),
    "stock": ("DP-1/帐篷", {"quantity": 200, "unit": "顶"}),
    "shelters": (
        "SH-1",
        {
            "name": "竹根镇中学操场",
            "region_code": TOWN_A,
            "lon": 103.81,
            "lat": 29.42,
            "capacity_persons": 1200,
            "area_m2": 2400,
            "is_open": True,
        },
    ),
    "experts": (
        "EX-1",
        {
            "name": "李地质",
            "region_code": TOWN_A,
            "expertise": "地质灾害",
            "contact_phone": "13900002222",
        },
    ),
    "plans": (
        "PL-1",
        {"name": "五通桥区防汛应急预案", "region_code": "511112000000", "hazard": "flood"},
    ),
    "targets": (
        "TG-1",
        {
            "name": "竹根镇中心小学",
            "region_code": TOWN_A,
            "lon": 103.815,
            "lat": 29.415,
            "target_type": "school",
            "population": 800,
        },
    ),
    "hazard_sites": (
        "HS-1",
        {
            "name": "石岗村滑坡",
            "region_code": TOWN_B,
            "lon": 103.85,
            "lat": 29.45,
            "site_type": "landslide",
            "households": 12,
            "persons": 41,
        },
    ),
}


@pytest.fixture
async def ingest(database, broker, topic_prefix):
    settings = ingest_settings(database, broker, topic_prefix, health_sweep_s=0)
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        yield c


def admin() -> dict[str, str]:
    """An admin's signed identity, made when asked: it expires a minute after signing."""
    return identity_header(subject="admin1")


async def test_every_registry_round_trips_with_its_audit_trail(ingest):
    c = ingest
    assert set(SAMPLES) == set(REGISTRIES)
    for kind, (key, body) in SAMPLES.items():  # in an order that satisfies the references
        r = await c.put(f"/v1/atlas/registries/{kind}/records/{key}", json=body, headers=admin())
        assert r.status_code == 201, (kind, r.text)
        again = await c.put(
            f"/v1/atlas/registries/{kind}/records/{key}", json=body, headers=admin()
        )
        assert again.status_code == 200, again.text
        got = (await c.get(f"/v1/atlas/registries/{kind}/records/{key}", headers=admin())).json()
        for field, value in body.items():
            expected = {"二级": "2"}.get(str(value), value)
            assert got[field] == expected, (kind, field)
        trail = (await c.get(f"/v1/atlas/audit/{kind}/{key}", headers=admin())).json()
        assert [(e["action"], e["actor"], e["via"]) for e in trail] == [
            ("create", "admin1", "api")
        ], kind
    # a change is audited with what it was
    body = {**SAMPLES["teams"][1], "members": 50}
    r = await c.put("/v1/atlas/registries/teams/records/TM-1", json=body, headers=admin())
    assert r.json()["members"] == 50
    trail = (await c.get("/v1/atlas/audit/teams/TM-1", headers=admin())).json()
    assert [e["action"] for e in trail] == ["create", "update"]
    assert (trail[1]["before"]["members"], trail[1]["after"]["members"]) == (45, 50)
    # GeoJSON of a located registry
    r = await c.get(
        "/v1/atlas/registries/targets/records", params={"format": "geojson"}, headers=admin()
    )
    assert r.headers["content-type"] == "application/geo+json"
    (feature,) = r.json()["features"]
    assert feature["geometry"] == {"type": "Point", "coordinates": [103.815, 29.415]}
    assert feature["properties"]["population"] == 800
    # the stock is addressed under its depot; deleting the depot takes its stock with it
    assert (await c.get("/v1/atlas/registries/stock/records/DP-1/帐篷", headers=admin())).json()[
        "quantity"
    ] == 200
    assert (
        await c.delete("/v1/atlas/registries/depots/records/DP-1", headers=admin())
    ).status_code == 204
    assert (
        await c.get("/v1/atlas/registries/stock/records/DP-1/帐篷", headers=admin())
    ).status_code == 404
    trail = (await c.get("/v1/atlas/audit/depots/DP-1", headers=admin())).json()
    assert trail[-1]["action"] == "delete"
    assert trail[-1]["before"]["name"] == "区级物资储备库"


async def test_bad_records_are_refused_with_the_field_and_reason(ingest):
    c = ingest
    bad = {**SAMPLES["enterprises"][1]}
    r = await c.put(
        "/v1/atlas/registries/enterprises/records/91440300708461136A", json=bad, headers=admin()
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"] == [
        {
            "column": "id",
            "reason": "the check character is 'A', the first 17 characters give 'T'",
        }
    ]
    # a major hazard of an enterprise that is not registered
    r = await c.put(
        "/v1/atlas/registries/major_hazards/records/MH-1",
        json=SAMPLES["major_hazards"][1],
        headers=admin(),
    )
    assert r.status_code == 422
    assert f"'{ENTERPRISE}' is not registered" in r.json()["detail"]
    r = await c.get("/v1/atlas/registries/nonsense/records", headers=admin())
    assert r.status_code == 422


def csv_of(rows: list[list[object]]) -> bytes:
    return "\n".join(",".join(str(c) for c in row) for row in rows).encode("utf-8-sig")


TARGET_HEAD = ["编号", "名称", "行政区划代码", "经度", "纬度", "目标类型", "人数", "坐标系"]


async def test_csv_import_is_all_or_nothing_and_idempotent(ingest):
    c = ingest
    rows: list[list[object]] = [
        TARGET_HEAD,
        ["TG-1", "竹根镇中心小学", TOWN_A, 103.815, 29.415, "学校", 800, ""],
        ["TG-2", "竹根镇幼儿园", TOWN_A, 103.816, 29.416, "幼儿园", "八十", ""],
        ["TG-3", "敬老院", TOWN_A, 103.817, 29.417, "nursing", 60, ""],
        ["TG-4", "石岗村", TOWN_B, 103.85, 29.45, "village", 300, "gcj02"],
    ]
    hdr = {**admin(), "content-type": "text/csv"}
    r = await c.post("/v1/atlas/registries/targets/import", content=csv_of(rows), headers=hdr)
    assert r.status_code == 422
    problem = r.json()
    assert problem["type"] == "urn:qianshao:error:import"
    assert [(e["row"], e["column"]) for e in problem["errors"]] == [
        (3, "population"),
        (4, "target_type"),
    ]
    assert "row 3, column population" in problem["detail"]
    assert (
        await c.get("/v1/atlas/registries/targets/records", headers=admin())
    ).json() == []  # nothing half-done

    rows[2][6] = 80
    rows[3][5] = "养老机构"
    r = await c.post(
        "/v1/atlas/registries/targets/import?filename=targets.csv",
        content=csv_of(rows),
        headers=hdr,
    )
    assert r.json() == {"rows": 4, "created": 4, "updated": 0, "unchanged": 0, "dry_run": False}
    r = await c.post(
        "/v1/atlas/registries/targets/import?filename=targets.csv",
        content=csv_of(rows),
        headers=hdr,
    )
    assert r.json() == {"rows": 4, "created": 0, "updated": 0, "unchanged": 4, "dry_run": False}
    trail = (await c.get("/v1/atlas/audit/targets/TG-1", headers=admin())).json()
    assert [(e["action"], e["via"]) for e in trail] == [("create", "import:targets.csv")]
    # the GCJ-02 row was moved to WGS 84: a few hundred metres here
    village = (await c.get("/v1/atlas/registries/targets/records/TG-4", headers=admin())).json()
    lon, lat = gcj02_to_wgs84(103.85, 29.45)
    assert (village["lon"], village["lat"]) == (pytest.approx(lon), pytest.approx(lat))
    assert 0.001 < abs(103.85 - lon) + abs(29.45 - lat) < 0.01
    # a file saved by Excel on a Chinese desktop: GB 18030 text
    gbk = "\n".join(",".join(str(x) for x in row) for row in rows[:2]).encode("gb18030")
    r = await c.post("/v1/atlas/registries/targets/import", content=gbk, headers=hdr)
    assert r.json()["unchanged"] == 1


async def test_excel_template_export_and_reimport(ingest):
    c = ingest
    r = await c.get("/v1/atlas/registries/shelters/template", headers=admin())
    assert r.headers["content-type"] == XLSX
    sheet = load_workbook(io.BytesIO(r.content)).worksheets[0]
    heads = [cell.value for cell in sheet[1]]
    assert heads[0] == "编号（id）"
    assert "容纳人数（capacity_persons）" in heads

    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(heads)
    col = {h: i for i, h in enumerate(heads)}

    def row(**values: object) -> list[object]:
        out: list[object] = [None] * len(heads)
        for k, v in values.items():
            out[next(i for h, i in col.items() if h.endswith(f"（{k}）"))] = v
        return out

    ws.append(
        row(
            id="SH-1",
            name="中学操场",
            region_code=TOWN_A,
            lon=103.81,
            lat=29.42,
            capacity_persons=1200,
            area_m2=2400,
            is_open="是",
            serves=f"{TOWN_A};{TOWN_B}",
        )
    )
    ws.append(
        row(
            id="SH-2",
            name="文化广场",
            region_code=TOWN_B,
            lon=103.86,
            lat=29.46,
            capacity_persons=500,
            is_open="否",
        )
    )
    buf = io.BytesIO()
    book.save(buf)
    hdr = {**admin(), "content-type": XLSX}
    r = await c.post("/v1/atlas/registries/shelters/import", content=buf.getvalue(), headers=hdr)
    assert r.json()["created"] == 2, r.text
    got = (await c.get("/v1/atlas/registries/shelters/records/SH-1", headers=admin())).json()
    assert got["serves"] == [TOWN_A, TOWN_B]
    assert got["is_open"] is True

    for fmt, media in (("xlsx", XLSX), ("csv", "text/csv")):
        export = await c.get(
            "/v1/atlas/registries/shelters/export", params={"format": fmt}, headers=admin()
        )
        assert export.status_code == 200
        r = await c.post(
            "/v1/atlas/registries/shelters/import",
            content=export.content,
            headers={**admin(), "content-type": media},
        )
        assert r.json()["unchanged"] == 2, (fmt, r.text)

    r = await c.post("/v1/atlas/registries/shelters/import", content=b"not a workbook", headers=hdr)
    assert r.status_code == 422
    assert "Excel" in r.json()["detail"]


async def test_references_and_region_scope_hold_for_imports(ingest):
    c = ingest
    hdr = {**admin(), "content-type": "text/csv"}
    rows = [
        ["id", "name", "region_code", "lon", "lat", "enterprise_id", "grade"],
        ["MH-1", "液氯储罐区", TOWN_A, 103.8, 29.4, ENTERPRISE, "1"],
    ]
    r = await c.post("/v1/atlas/registries/major_hazards/import", content=csv_of(rows), headers=hdr)
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"row": 2, "column": "enterprise_id", "reason": f"'{ENTERPRISE}' is not registered"}
    ]
    town_officer = identity_header(
        roles=["duty_officer"], scopes=["atlas:read", "atlas:write"], region_prefix="511112101"
    )
    rows = [TARGET_HEAD, ["TG-9", "外镇小学", TOWN_B, 103.85, 29.45, "school", 100, ""]]
    r = await c.post(
        "/v1/atlas/registries/targets/import",
        content=csv_of(rows),
        headers={**town_officer, "content-type": "text/csv"},
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["reason"].startswith("region 511112102000 is outside your scope")
    await c.put(
        "/v1/atlas/registries/targets/records/TG-9",
        json={
            "name": "外镇小学",
            "region_code": TOWN_B,
            "lon": 103.85,
            "lat": 29.45,
            "target_type": "school",
            "population": 100,
        },
        headers=admin(),
    )
    assert (await c.get("/v1/atlas/registries/targets/records", headers=town_officer)).json() == []
    assert (
        await c.get("/v1/atlas/registries/targets/records/TG-9", headers=town_officer)
    ).status_code == 403
    viewer = identity_header(roles=["viewer"], scopes=["atlas:read"])
    r = await c.put("/v1/atlas/registries/targets/records/TG-9", json={}, headers=viewer)
    assert r.status_code == 403
