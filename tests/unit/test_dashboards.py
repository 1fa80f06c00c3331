"""The Grafana dashboards built from shared/ops/dashboards/: the committed JSON, provisioning and
ConfigMap are what the code generates; every board is well formed (ids, grid, data sources); every
PromQL query names only metrics the services export; every SQL query renders to plain SQL."""

from __future__ import annotations

import importlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from shared.ops import dashboards
from shared.ops.dashboards import POSTGRES, PROMETHEUS, panel_queries, render_promql, render_sql

ROOT = Path(__file__).resolve().parents[2]
BOARDS = dashboards.build_all()
# each service's wiring imports every module of it, and so every metric it defines
METRIC_MODULES = (
    "shared.http",
    "services.ingest.app",
    "services.risk.app",
    "services.alerting.app",
    "services.gateway.app",
)


def test_committed_files_are_what_the_code_generates():
    files = dashboards.render(ROOT)
    assert len(files) == len(BOARDS) + 4
    for path, text in files.items():
        assert path.exists(), f"{path} is missing: run `qianshao dashboards`"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale"


def test_configmap_carries_every_dashboard_for_the_sidecar():
    path = ROOT / "deploy/k8s/base/monitoring/grafana-dashboards.yaml"
    cm = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {json.loads(v)["uid"] for v in cm["data"].values()} == {
        b["uid"] for b in BOARDS.values()
    }


def test_provisioned_data_sources_are_the_ones_the_panels_use():
    path = ROOT / "deploy/grafana/provisioning/datasources/qianshao.yaml"
    provisioned = {d["uid"]: d["type"] for d in yaml.safe_load(path.read_text())["datasources"]}
    assert provisioned == {PROMETHEUS.uid: PROMETHEUS.type_val, POSTGRES.uid: POSTGRES.type_val}
    used = {q.datasource for b in BOARDS.values() for q in panel_queries(b)}
    assert used == set(provisioned)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_is_well_formed(name: str):
    board = BOARDS[name]
    assert board["uid"] == f"qianshao-{name}"
    assert len(board["uid"]) <= 40
    assert board["templating"]["list"][0]["name"] == "region"
    panels = list(dashboards.all_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert min(g["w"], g["h"], g["x"], g["y"]) >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        targets = p["targets"]
        assert targets, p["title"]
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), p["title"]
        for t in targets:
            assert t["datasource"]["uid"] in {PROMETHEUS.uid, POSTGRES.uid}
            assert (t.get("rawSql") or t.get("expr", "")).strip(), p["title"]


def _exported_metrics() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


def test_promql_names_only_exported_metrics():
    exported = _exported_metrics()
    used: set[str] = set()
    for board in BOARDS.values():
        for q in panel_queries(board):
            if q.datasource == PROMETHEUS.uid:
                used.update(re.findall(r"\bqianshao_[a-z_]+", q.query))
    assert used, "no PromQL found"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # the key series each appear on a board
    for key in (
        "qianshao_ingest_readings_total",
        "qianshao_ingest_rejected_total",
        "qianshao_consumer_lag_messages",
        "qianshao_ingest_db_write_duration_seconds_bucket",
        "qianshao_risk_events_total",
        "qianshao_warnings",
        "qianshao_deliveries_total",
        "qianshao_confirm_rate_ratio",
        "qianshao_confirm_duration_seconds_bucket",
        "qianshao_reading_to_delivery_duration_seconds_bucket",
    ):
        assert key in used, key


def _all(datasource: str) -> list[Any]:
    return [q for b in BOARDS.values() for q in panel_queries(b) if q.datasource == datasource]


def test_sql_renders_to_plain_sql_with_the_region_quoted():
    start = datetime(2026, 7, 1, tzinfo=UTC)
    queries = _all(POSTGRES.uid)
    assert len(queries) >= 10
    for q in queries:
        sql = render_sql(q.query, start, start + timedelta(hours=6), {"region": "110101"})
        assert "$" not in sql, (q.panel, sql)
    hostile = render_sql(
        "WHERE region_code LIKE ${region:sqlstring} || '%' AND $__timeFilter(ts)",
        start,
        start + timedelta(hours=1),
        {"region": "1'; DROP TABLE x; --"},
    )
    assert "LIKE '1''; DROP TABLE x; --' || '%'" in hostile
    assert "ts BETWEEN '2026-07-01T00:00:00+00:00' AND '2026-07-01T01:00:00+00:00'" in hostile
    grouped = render_sql("SELECT $__timeGroupAlias(minute, '5m')", start, start, {})
    assert grouped == 'SELECT floor(extract(epoch from minute)/300)*300 AS "time"'


def test_promql_renders_without_grafana_variables():
    for q in _all(PROMETHEUS.uid):
        assert "$" not in render_promql(q.query), q.panel


def test_geomap_reads_coordinates_and_level_from_its_query():
    board = BOARDS["risk-map"]
    geo = next(p for p in board["panels"] if p["type"] == "geomap")
    layer = geo["options"]["layers"][0]
    assert layer["location"] == {"mode": "coords", "latitude": "lat", "longitude": "lon"}
    assert layer["config"]["style"]["color"]["field"] == "level"
    sql = geo["targets"][0]["rawSql"]
    for column in ("lat", "lon", "level"):
        assert re.search(rf"\b{column}\b", sql)
    steps = geo["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["color"] for s in steps] == ["green", "blue", "yellow", "orange", "red"]
