"""Debian's Prometheus scrapes the running stack: readings pushed through the gateway become a
warning sent by SMS, and the key series are there to query, per service, through Prometheus's
own HTTP API. The alert rules of deploy/prometheus are loaded too, and evaluate. Every query of
every generated Grafana dashboard then runs against this stack as Grafana sends it: PromQL
through Prometheus, SQL against the stack's database; the boards show the warning that flowed."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import httpx
import yaml

from shared.devstack.procs import free_port
from shared.ops.dashboards import (
    POSTGRES,
    PROMETHEUS,
    build_all,
    panel_queries,
    render_promql,
    render_sql,
)
from tests.e2e.test_slice import STATION, login
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]

KEY_SERIES = {
    "ingest": [
        'qianshao_ingest_readings_total{job="ingest"}',
        "qianshao_ingest_db_write_duration_seconds_count",
        'qianshao_build_info{component="ingest"} == 1',
    ],
    "risk": [
        'qianshao_risk_events_total{level="red"}',
        "qianshao_consumer_lag_messages",
        # the red event left risk's outbox: nothing waits there any more
        'qianshao_outbox_unpublished_events{schema="risk"} == 0',
        'qianshao_outbox_oldest_unpublished_age_seconds{schema="risk"} == 0',
    ],
    "alerting": [
        'qianshao_warning_versions_total{msg_type="Alert",level="red"}',
        'qianshao_deliveries_total{channel="sms",result="sent"}',
        "qianshao_warning_delivery_duration_seconds_bucket",
        'qianshao_reading_to_delivery_duration_seconds_count{channel="sms"} >= 1',
        'qianshao_warnings{state="issued",level="red"} == 1',
        "qianshao_confirm_pending == 1",
        # the SMS went: the ledger holds nothing undelivered for it
        'qianshao_ledger_undelivered{channel="sms",state="pending"} == 0',
        'qianshao_ledger_oldest_undelivered_age_seconds{channel="sms"} == 0',
    ],
    "gateway": [
        'qianshao_http_requests_total{route="/api/v1/{service}/{path:path}",status="202"}',
        'qianshao_http_request_duration_seconds_count{route="/api/v1/{service}/{path:path}"}',
        'qianshao_build_info{component="gateway"} == 1',
    ],
}


def config(targets: dict[str, str], rules: Path) -> str:
    jobs = "\n".join(
        f"""  - job_name: {name}
    scrape_interval: 1s
    static_configs:
      - targets: ["{urlparse(url).netloc}"]"""
        for name, url in targets.items()
    )
    return f"""global:
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
{jobs}
"""


# dashboard panels that must show a number once one red warning has been texted
SHOWING = {
    "Warnings by state and level",
    "Consumer lag per partition",
    "Waiting to confirm",
    "Open warnings, red",
    "Seconds since a source was last heard, by topic",
}


async def test_prometheus_scrapes_the_key_series(stack, database, tmp_path):
    exe = shutil.which("prometheus")
    assert exe, "prometheus is missing: scripts/bootstrap.sh installs Debian's package"
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        admin = await login(c, stack.admin_password)
        assert (
            await c.post("/api/v1/ingest/stations", json=STATION, headers=admin)
        ).status_code == 201
        r = await c.post(
            "/api/v1/alerts/persons",
            json={
                "name": "村干部",
                "role": "village_cadre",
                "region_code": "110101001001",
                "phone": "13900139100",
            },
            headers=admin,
        )
        assert r.status_code == 201
        now = datetime.now(UTC).replace(microsecond=0)
        r = await c.post(
            "/api/v1/ingest/readings",
            json={
                "source": "city-platform",
                "readings": [
                    {
                        "station_id": STATION["id"],
                        "metric": "water_level",
                        "unit": "m",
                        "ts": (now - timedelta(minutes=1)).isoformat(),
                        "value": 4.9,
                    },
                ],
            },
            headers={"X-API-Key": stack.api_key},
        )
        assert r.status_code == 202

        async def texted() -> Any:
            return stack.sms.per_number().get("13900139100") == 1

        await eventually(texted, what="the SMS")

    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    targets = {**stack.services, "gateway": stack.gateway}
    cfg.write_text(config(targets, ROOT / "deploy" / "prometheus" / "alerts.yml"))
    proc = subprocess.Popen(  # noqa: ASYNC220 - starts it and returns at once
        [
            exe,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        async with httpx.AsyncClient(timeout=5) as p:

            async def up() -> Any:
                try:
                    r = await p.get(f"{api}/query", params={"query": "up"})
                except httpx.HTTPError:
                    return None
                if r.status_code != 200:  # still starting: 503 and plain text
                    return None
                res = r.json()["data"]["result"]
                ok = {x["metric"]["job"] for x in res if x["value"][1] == "1"}
                return ok if ok == set(targets) else None

            await eventually(up, timeout_s=60, what="every service scraped")
            # the labels the series carry never clash with the scrape's own target labels
            # (Prometheus would rename them exported_*)
            clashes = await p.get(f"{api}/series", params={"match[]": '{__name__=~"qianshao_.+"}'})
            names = {k for m in clashes.json()["data"] for k in m}
            assert not {n for n in names if n.startswith("exported_")}, names
            assert not names & {"service", "namespace", "pod", "container", "endpoint"}, names
            for job, series in KEY_SERIES.items():
                for expr in series:
                    query = expr if "job=" in expr else _with_job(expr, job)

                    async def found(q: str = query) -> Any:
                        r = await p.get(f"{api}/query", params={"query": q})
                        return r.json()["data"]["result"]

                    result = await eventually(found, timeout_s=30, what=query)
                    assert result, query
            r = await p.get(f"{api}/rules")
            groups = r.json()["data"]["groups"]
            # every alert of the rules file is loaded and healthy
            rules_file = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
            defined = sum(len(g["rules"]) for g in rules_file["groups"])
            assert defined >= 6
            assert sum(len(g["rules"]) for g in groups) == defined
            assert all(x["health"] == "ok" for g in groups for x in g["rules"])
            await _dashboards_against_the_stack(p, api, database)
    finally:
        proc.terminate()
        proc.wait(30)


def _with_job(expr: str, job: str) -> str:
    if " " in expr:
        metric, rest = expr.split(" ", 1)
        return f"{_with_job(metric, job)} {rest}"
    if "{" in expr:
        return expr.replace("{", f'{{job="{job}",', 1)
    return f'{expr}{{job="{job}"}}'


async def _dashboards_against_the_stack(p: httpx.AsyncClient, api: str, database: str) -> None:
    boards = build_all()
    shown: set[str] = set()
    for board in boards.values():
        for q in panel_queries(board):
            if q.datasource != PROMETHEUS.uid:
                continue
            r = await p.get(f"{api}/query", params={"query": render_promql(q.query)})
            assert r.status_code == 200, (q.panel, r.text)
            body = r.json()
            assert body["status"] == "success", (q.panel, body)
            if any(x["value"][1] != "NaN" for x in body["data"]["result"]):
                shown.add(q.panel)
    assert shown >= SHOWING, SHOWING - shown

    end = datetime.now(UTC) + timedelta(minutes=1)
    conn = await asyncpg.connect(database)
    try:
        rows: dict[str, list[Any]] = {}
        for board in boards.values():
            for q in panel_queries(board):
                if q.datasource == POSTGRES.uid:
                    sql = render_sql(q.query, end - timedelta(hours=1), end, {"region": "110101"})
                    rows[q.panel] = await conn.fetch(sql)
    finally:
        await conn.close()
    [station] = rows["四色图 · stations by current level"]
    assert (station["station"], station["level"], station["lat"]) == (STATION["id"], 4, 39.9)
    assert [r["level"] for r in rows["Warnings in range"]] == [4]
    assert [r["name"] for r in rows["Not yet confirmed (叫而未应)"]] == ["村干部"]
    sent = {r["channel"]: r["sent"] for r in rows["Deliveries in range, by channel"]}
    assert sent["sms"] == 1
