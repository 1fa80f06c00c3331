"""The demo county's 一张图: enterprises, teams, a depot and its stock, shelters, protection
targets, a geohazard site and plans around 竹根镇 (乐山市五通桥区), imported through the gateway as
CSV files, the way a bureau loads them; and a watcher that, for each new warning, asks what is in
and around it and says so.

Names and figures are examples (marked 示例), not the county's registers; the credit codes are
made up with a valid check character."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from services.ingest.domain.atlas.checks import uscc_check_char
from services.ingest.domain.atlas.registries import HAZARDS

ZHUGEN = "511112100000"  # 竹根镇
MINJIANG = "511112100007"  # 岷江社区
CHAHUA = "511112100202"  # 茶花村
COUNTY = "511112000000"


def _uscc(serial: str) -> str:
    head = "915111120" + serial
    return head + uscc_check_char(head)


DEMO_ATLAS: dict[str, list[dict[str, Any]]] = {
    "enterprises": [
        {
            "id": _uscc("00000001"),
            "name": "五通桥示例盐化有限公司",
            "region_code": MINJIANG,
            "lon": 103.829,
            "lat": 29.398,
            "sector": "hazchem_production",
            "risk_grade": "orange",
            "monitoring_required": "是",
            "safety_officer_name": "张安全（示例）",
            "safety_officer_phone": "13800138101",
        },
        {
            "id": _uscc("00000002"),
            "name": "竹根示例液化气储配站",
            "region_code": CHAHUA,
            "lon": 103.812,
            "lat": 29.421,
            "sector": "hazchem_storage",
            "risk_grade": "yellow",
            "monitoring_required": "是",
            "safety_officer_name": "李储运（示例）",
            "safety_officer_phone": "13800138102",
        },
    ],
    "teams": [
        {
            "id": "TM-WTQ-01",
            "name": "五通桥区消防救援大队（示例）",
            "region_code": ZHUGEN,
            "lon": 103.818,
            "lat": 29.409,
            "team_type": "fire_rescue",
            "members": 46,
            "equipment": "冲锋舟 4 艘；排涝泵 6 台",
            "on_call_name": "大队值班室",
            "on_call_phone": "0833-3301119",
        },
        {
            "id": "TM-ZG-02",
            "name": "竹根镇应急民兵排（示例）",
            "region_code": CHAHUA,
            "lon": 103.808,
            "lat": 29.425,
            "team_type": "militia",
            "members": 30,
            "on_call_name": "武装部",
            "on_call_phone": "13800138201",
        },
    ],
    "depots": [
        {
            "id": "DP-WTQ-01",
            "name": "五通桥区应急物资储备库（示例）",
            "region_code": ZHUGEN,
            "lon": 103.834,
            "lat": 29.414,
            "depot_level": "county",
        }
    ],
    "stock": [
        {"depot_id": "DP-WTQ-01", "item": "救生衣", "quantity": 800, "unit": "件"},
        {"depot_id": "DP-WTQ-01", "item": "帐篷", "quantity": 120, "unit": "顶"},
        {"depot_id": "DP-WTQ-01", "item": "沙袋", "quantity": 20000, "unit": "条"},
    ],
    "shelters": [
        {
            "id": "SH-ZG-01",
            "name": "竹根镇中学操场避难场所（示例）",
            "region_code": MINJIANG,
            "lon": 103.823,
            "lat": 29.404,
            "capacity_persons": 1500,
            "area_m2": 2400,
            "is_open": "是",
            "serves": f"{MINJIANG};{CHAHUA}",
        },
        {
            "id": "SH-ZG-02",
            "name": "茶花村文化广场（示例）",
            "region_code": CHAHUA,
            "lon": 103.811,
            "lat": 29.423,
            "capacity_persons": 400,
            "is_open": "否",
        },
    ],
    "targets": [
        {
            "id": "TG-ZG-01",
            "name": "竹根镇中心小学（示例）",
            "region_code": MINJIANG,
            "lon": 103.820,
            "lat": 29.405,
            "target_type": "school",
            "population": 860,
        },
        {
            "id": "TG-ZG-02",
            "name": "岷江社区幼儿园（示例）",
            "region_code": MINJIANG,
            "lon": 103.822,
            "lat": 29.407,
            "target_type": "kindergarten",
            "population": 190,
        },
        {
            "id": "TG-ZG-03",
            "name": "竹根镇敬老院（示例）",
            "region_code": CHAHUA,
            "lon": 103.809,
            "lat": 29.422,
            "target_type": "nursing_home",
            "population": 72,
        },
    ],
    "hazard_sites": [
        {
            "id": "HS-ZG-01",
            "name": "茶花村后山滑坡（示例）",
            "region_code": CHAHUA,
            "lon": 103.806,
            "lat": 29.427,
            "site_type": "landslide",
            "households": 14,
            "persons": 47,
            "monitor_name": "王群测（示例）",
            "monitor_phone": "13800138301",
        }
    ],
    "plans": [
        {
            "id": "PL-WTQ-FLOOD",
            "name": "五通桥区防汛抗旱应急预案（示例）",
            "region_code": COUNTY,
            "hazard": "flood",
            "response_level": "IV",
            "issuer": "五通桥区防汛抗旱指挥部",
        },
        {
            "id": "PL-WTQ-ALL",
            "name": "五通桥区突发事件总体应急预案（示例）",
            "region_code": COUNTY,
            "hazard": "comprehensive",
            "issuer": "五通桥区人民政府",
        },
    ],
}


def as_csv(rows: list[dict[str, Any]]) -> bytes:
    heads = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(heads)
    for r in rows:
        w.writerow([r.get(h, "") for h in heads])
    return out.getvalue().encode("utf-8")


async def setup_atlas(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> dict[str, int]:
    """Each registry imported as a CSV file (again on every start: nothing changes then)."""
    created: dict[str, int] = {}
    for kind, rows in DEMO_ATLAS.items():
        r = await client.post(
            f"/api/v1/ingest/atlas/registries/{kind}/import",
            params={"filename": f"demo-{kind}.csv"},
            content=as_csv(rows),
            headers={**admin_headers, "Content-Type": "text/csv"},
        )
        r.raise_for_status()
        created[kind] = int(r.json()["created"])
    return created


def describe(warning: dict[str, Any], found: dict[str, Any]) -> str:
    """One line for the console: what the warning's area holds and what can act."""
    s = found["summary"]
    head = f"[demo] around {warning['level']} warning {warning['id']} ({warning['hazard']}): "
    parts = [
        f"{s['targets']} protection targets ({s['population_in_targets']} people)",
        f"{len(found['hazard_sites'])} geohazard sites ({s['persons_threatened']} people)",
        f"{len(found['shelters'])} shelters serving ({s['shelter_capacity']} places, "
        f"shortfall {s['shortfall']})",
    ]
    if found["teams"]:
        t = found["teams"][0]
        parts.append(f"nearest team {t['name']} {t['distance_m'] / 1000:.1f} km")
    if found["depots"]:
        d = found["depots"][0]
        stock = "、".join(f"{x['item']} {x['quantity']:g}{x['unit']}" for x in d["stock"][:3])
        parts.append(f"depot {d['name']} {d['distance_m'] / 1000:.1f} km ({stock})")
    if found["plans"]:
        parts.append("plan " + found["plans"][0]["name"])
    return head + " · ".join(parts)


async def watch_surroundings(
    client: httpx.AsyncClient,
    headers: Callable[[], Awaitable[dict[str, str]]],
    say: Callable[[str], None],
    every_s: float = 3.0,
) -> None:
    """For each warning seen for the first time, what is in and around its area."""
    seen: set[str] = set()
    while True:
        try:
            auth = await headers()
            r = await client.get("/api/v1/alerts/warnings", headers=auth)
            for w in r.json() if r.status_code == 200 else []:
                if w["id"] in seen or w.get("state") == "closed":
                    continue
                seen.add(w["id"])
                body: dict[str, Any] = {"regions": w.get("areas") or [w["region_code"]]}
                if w.get("hazard") in HAZARDS:
                    body["hazard"] = w["hazard"]
                found = await client.post(
                    "/api/v1/ingest/atlas/surroundings", json=body, headers=auth
                )
                if found.status_code == 200:
                    say(describe(w, found.json()))
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            say(f"[demo] surroundings: {exc!r}")
        await asyncio.sleep(every_s)
