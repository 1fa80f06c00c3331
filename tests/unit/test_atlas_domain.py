"""The 一张图's registries as data: credit codes, positions, rows of a sheet, the shelter balance
and the enterprise KPI, checked against values written out here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.ingest.domain.atlas.area import (
    balance,
    cap_polygon,
    feature_collection,
    shelter_capacity,
)
from services.ingest.domain.atlas.checks import (
    gcj02_to_wgs84,
    region_prefix,
    uscc_problem,
    wgs84_to_gcj02,
)
from services.ingest.domain.atlas.kpi import EnterpriseFeed, online_monitoring
from services.ingest.domain.atlas.records import (
    Record,
    classify,
    export_row,
    parse_record,
    parse_rows,
    template_headings,
)
from services.ingest.domain.atlas.registries import REGISTRIES

# published credit codes of listed companies (their annual reports print them)
REAL_CODES = ["91440300708461136T", "91110108551385082Q", "91350100M000100Y43"]


@pytest.mark.parametrize("code", REAL_CODES)
def test_real_credit_codes_pass(code):
    assert uscc_problem(code) is None


def test_a_wrong_check_character_is_named():
    assert uscc_problem("91440300708461136A") == (
        "the check character is 'A', the first 17 characters give 'T'"
    )
    assert "18 characters" in (uscc_problem("9144030070846113") or "")
    assert "capitals other than" in (uscc_problem("91440300708461136I") or "")


def test_region_prefix_by_level():
    assert region_prefix("510000000000") == "51"
    assert region_prefix("511100000000") == "5111"
    assert region_prefix("511112000000") == "511112"
    assert region_prefix("511112101000") == "511112101"
    assert region_prefix("511112101001") == "511112101001"


def test_gcj02_round_trip_and_a_known_offset():
    # 天安门: WGS 84 (116.39139, 39.90734) is shown by Chinese web maps about 530 m east
    glon, glat = wgs84_to_gcj02(116.39139, 39.90734)
    assert glon == pytest.approx(116.39763, abs=2e-5)
    assert glat == pytest.approx(39.90874, abs=2e-5)
    lon, lat = gcj02_to_wgs84(glon, glat)
    assert (lon, lat) == (pytest.approx(116.39139, abs=1e-7), pytest.approx(39.90734, abs=1e-7))
    assert gcj02_to_wgs84(2.35, 48.85) == (2.35, 48.85)  # outside China: no offset


def enterprise(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "91440300708461136T",
        "name": "红星化工有限公司",
        "region_code": "511112101000",
        "lon": "103.82",
        "lat": "29.41",
        "sector": "危险化学品生产",  # the Chinese label is accepted
        "risk_grade": "orange",
        "monitoring_required": "是",
        "safety_officer_phone": "138 0000 1111",
        "employees": "120",
    }
    row.update(over)
    return row


def test_a_record_from_labels_and_text():
    rec = parse_record(REGISTRIES["enterprises"], enterprise())
    assert isinstance(rec, Record)
    assert rec.key == "91440300708461136T"
    assert rec.values["sector"] == "hazchem_production"
    assert rec.values["monitoring_required"] is True
    assert rec.values["safety_officer_phone"] == "13800001111"
    assert rec.values["employees"] == 120
    assert rec.values["geom"] == "SRID=4326;POINT(103.8200000 29.4100000)"


def test_gcj02_positions_are_stored_in_wgs84():
    rec = parse_record(REGISTRIES["enterprises"], enterprise(crs="GCJ-02"))
    assert isinstance(rec, Record)
    lon, lat = gcj02_to_wgs84(103.82, 29.41)
    assert rec.values["geom"] == f"SRID=4326;POINT({lon:.7f} {lat:.7f})"
    assert lon != pytest.approx(103.82, abs=1e-3)


def test_every_bad_field_is_reported():
    errors = parse_record(
        REGISTRIES["enterprises"],
        enterprise(
            id="91440300708461136A", sector="bakery", employees="-1", lat="", region_code="5111"
        ),
    )
    assert isinstance(errors, list)
    by_column = {e.column: e.reason for e in errors}
    assert set(by_column) == {"id", "sector", "employees", "lat", "region_code"}
    assert "check character" in by_column["id"]
    assert "hazchem_production（危险化学品生产）" in by_column["sector"]
    assert by_column["lat"] == "is required"


def test_a_sheet_reports_row_and_column_and_repeated_keys():
    reg = REGISTRIES["targets"]
    rows: list[list[object]] = [
        ["编号", "名称（name）", "region_code", "经度", "lat", "target_type", "人数"],
        ["T1", "竹根镇中心小学", "511112101000", 103.8, 29.4, "学校", 800],
        ["T2", "幼儿园", "511112101000", 103.8, 29.4, "kindergarten", "many"],
        [None, None, None, None, None, None, None],  # an empty row is skipped
        ["T1", "again", "511112101000", 103.8, 29.4, "school", 1],
    ]
    sheet = parse_rows(reg, rows)
    assert [r.key for r in sheet.records] == ["T1"]
    assert sheet.rows == [2]
    assert [(e.row, e.column) for e in sheet.errors] == [(3, "population"), (5, "id")]
    assert sheet.errors[1].reason == "repeats row 2"


def test_unknown_and_missing_columns_are_named_on_row_one():
    sheet = parse_rows(REGISTRIES["teams"], [["id", "name", "colour"], ["x", "y", "z"]])
    reasons = {(e.row, e.column): e.reason for e in sheet.errors}
    assert reasons[(1, "colour")].startswith("is not a column")
    assert reasons[(1, "members")] == "this required column is missing"
    assert sheet.records == []


def test_an_export_row_imports_again_to_the_same_digest():
    reg = REGISTRIES["shelters"]
    raw = {
        "id": "S1",
        "name": "竹根镇避难场所",
        "region_code": "511112101000",
        "lon": 103.8123456,
        "lat": 29.4,
        "capacity_persons": 600,
        "area_m2": 900.0,
        "is_open": True,
        "serves": "511112101000；511112102000",
    }
    first = parse_record(reg, raw)
    assert isinstance(first, Record)
    stored = {**first.values, "lon": 103.8123456, "lat": 29.4}
    again = parse_rows(reg, [template_headings(reg), export_row(reg, stored)])
    assert again.errors == []
    assert again.records[0].digest == first.digest
    assert classify(again.records, {"S1": first.digest}) == {"S1": "unchanged"}
    assert classify(again.records, {"S1": "old"}) == {"S1": "update"}
    assert classify(again.records, {}) == {"S1": "create"}


def test_shelter_capacity_is_bounded_by_area_at_1_5_square_metres():
    assert shelter_capacity(600, 900.0) == 600
    assert shelter_capacity(600, 450.0) == 300
    assert shelter_capacity(600, None) == 600
    b = balance(people=1000, capacity=600)
    assert (b.shortfall, b.covered) == (400, 0.6)
    assert balance(0, 10).covered is None


def feed(eid: str, region: str, sector: str, stations: int, online: int) -> EnterpriseFeed:
    seen = datetime(2026, 7, 1, tzinfo=UTC) if stations else None
    return EnterpriseFeed(eid, eid, sector, region, stations, online, seen)


def test_the_kpi_counts_enterprises_not_sensors():
    feeds = [
        feed("A", "511112101001", "coal_mine", 10, 9),  # many sensors, online
        feed("B", "511112101002", "coal_mine", 0, 0),  # no sensor: counts against
        feed("C", "511112102001", "hazchem_use", 1, 1),
        feed("D", "511113101001", "hazchem_use", 2, 0),  # offline
    ]
    counties = online_monitoring(feeds, "county", 0.85)
    assert [(g.group, g.required, g.online) for g in counties] == [
        ("511112000000", 3, 2),
        ("511113000000", 1, 0),
    ]
    assert counties[0].rate == pytest.approx(2 / 3)
    assert counties[0].below_target
    towns = online_monitoring(feeds, "township", 0.5)
    assert [(g.group, g.rate, g.below_target) for g in towns] == [
        ("511112101000", 0.5, False),
        ("511112102000", 1.0, False),
        ("511113101000", 0.0, True),
    ]
    sectors = online_monitoring(feeds, "sector")
    assert [(g.group, g.required, g.online) for g in sectors] == [
        ("coal_mine", 2, 1),
        ("hazchem_use", 2, 1),
    ]
    assert [f.why_offline for f in feeds] == [None, "no_station", None, "offline"]


def test_cap_polygon_and_geojson():
    assert cap_polygon("29.4,103.8 29.5,103.8 29.5,103.9") == (
        "SRID=4326;POLYGON((103.8 29.4, 103.8 29.5, 103.9 29.5, 103.8 29.4))"
    )
    with pytest.raises(ValueError, match="three distinct"):
        cap_polygon("29.4,103.8 29.5,103.8")
    with pytest.raises(ValueError, match="not a 'lat,lon' pair"):
        cap_polygon("29.4;103.8 29.5,103.8 29.5,103.9")
    fc = feature_collection(
        {"targets": [{"id": "T1", "lon": 103.8, "lat": 29.4, "population": 800}]},
        {"type": "Polygon", "coordinates": []},
    )
    assert fc["type"] == "FeatureCollection"
    features = fc["features"]
    assert isinstance(features, list)
    assert features[1] == {
        "type": "Feature",
        "id": "targets/T1",
        "geometry": {"type": "Point", "coordinates": [103.8, 29.4]},
        "properties": {"layer": "targets", "id": "T1", "population": 800},
    }
